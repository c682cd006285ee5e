"""``hqseg bench [--quick] [--out DIR] [--scenarios a,b,...]``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


class BenchCommand:
    """Runs the benchmark scenarios and prints the command, the machine and the measured table."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        from hqseg_ray.bench.run import SCENARIOS

        p.add_argument("--quick", action="store_true",
                       help="tiny sizes (CI, about 2 minutes): 2 s vs 20 s videos, 1-video job, no torch.compile")
        p.add_argument("--out", default="bench-out", metavar="DIR",
                       help="output folder: bench.json, bench.md, *.png, job outputs")
        p.add_argument("--scenarios", default=None, metavar="A,B,...",
                       help=f"comma-separated subset of: {', '.join(SCENARIOS)}; 'all' adds compile to the "
                       "default (every scenario but compile, whose CPU compile takes minutes)")
        p.add_argument("--data-dir", default=None, metavar="DIR",
                       help="where the synthetic videos are generated and reused (default: <cache>/bench-data)")
        p.add_argument("--threads", type=int, default=1,
                       help="torch threads in this process and in each segment actor (default 1)")

    def run(self, args: argparse.Namespace) -> int:
        from hqseg_ray.bench.report import CONTRACT_KEYS
        from hqseg_ray.bench.run import Settings, run_bench

        settings = Settings.quick() if args.quick else Settings.full()
        settings.torch_threads = args.threads
        scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()] if args.scenarios else None
        command = "hqseg " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "hqseg bench"

        def progress(msg: str) -> None:
            print(msg, flush=True)

        res = run_bench(args.out, settings, scenarios, command=command, data_dir=args.data_dir, progress=progress)
        print()
        print((Path(args.out) / "bench.md").read_text())
        print(json.dumps({k: res.get(k) for k in CONTRACT_KEYS}, indent=1))
        print(f"wrote {args.out}/bench.json, bench.md, {', '.join(res.get('plots') or []) or 'no plots'}")
        return 0
