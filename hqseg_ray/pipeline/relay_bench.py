"""How long segment actors sit waiting on the relay: one long video, alone and beside short ones.

    python -m hqseg_ray.pipeline.relay_bench [--long-frames 240] [--short 3] [--actors 2] [--dir DIR]

Writes synthetic videos (what ``hqseg synth`` writes: one long clip, ``--short`` clips of 48 frames),
then runs the bulk job on an embedded Ray with ``--actors`` segment actors (toy model, CPU) in two
dispatch orders: ``max_chunks_in_flight_per_video`` = the pool size (video after video, the order
before the cap existed) and 1 (the default: chunks interleaved round-robin over videos). Prints
per run the wall time, the summed and the longest single relay wait (from ``videos.parquet``'s
``relay_wait_s`` / ``relay_wait_max_s``); ratios come from one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path


def _manifest(root: Path, long_frames: int, short: int) -> Path:
    from hqseg_ray.synth import write_dataset

    rows = []
    m = write_dataset(root / "long", videos=1, frames=long_frames, seed=21, size=(96, 128), n_objects=(2, 3))
    rows += [json.loads(x) for x in Path(m).read_text().splitlines()]
    if short:
        m = write_dataset(root / "short", videos=short, frames=48, seed=22, size=(96, 128), n_objects=(2, 3))
        rows += [json.loads(x) for x in Path(m).read_text().splitlines()]
    path = root / f"manifest-{short}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_once(manifest: Path, out: Path, actors: int, per_video: int) -> dict:
    import pyarrow.parquet as pq

    from hqseg_ray.config import JobConfig
    from hqseg_ray.pipeline import run_job

    config = JobConfig.model_validate({
        "model": {"type": "toy", "checkpoint": "auto", "device": "cpu"},
        "input": {"manifest": str(manifest)},
        "chunking": {"chunk_frames": 16, "overlap": 4},
        "compute": {"segment_actors_min": actors, "segment_actors_max": actors, "gpus_per_actor": 0,
                    "cpus_per_actor": 0.5, "decode_cpus": 0.25, "torch_threads": 1,
                    "max_chunks_in_flight_per_video": per_video},
        "output": {"path": str(out), "overwrite": True},
    })
    t0 = time.perf_counter()
    summary = run_job(config, progress=False)
    wall = time.perf_counter() - t0
    st = pq.read_table(out / "videos.parquet").to_pylist()
    return {"wall_s": wall, "ok": summary.ok, "failed": summary.failed, "frames": summary.frames,
            "wait_s": sum(r["relay_wait_s"] or 0.0 for r in st),
            "max_wait_s": max((r["relay_wait_max_s"] or 0.0) for r in st),
            "long_max_wait_s": max((r["relay_wait_max_s"] or 0.0) for r in st if r["video_id"].startswith("synth_s21"))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hqseg_ray.pipeline.relay_bench",
                                description=__doc__.split("\n")[0])
    p.add_argument("--long-frames", type=int, default=240)
    p.add_argument("--short", type=int, default=3, help="short videos run beside the long one")
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--dir", default=None, help="working folder (default: a temporary one)")
    args = p.parse_args(argv)
    import ray

    root = Path(args.dir or tempfile.mkdtemp(prefix="hqseg-relay-bench-"))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = sys.stdout
    out.write(f"command: python -m hqseg_ray.pipeline.relay_bench {' '.join(argv if argv is not None else sys.argv[1:])}\n")
    out.write(f"machine: {platform.processor() or platform.machine()}, Ray with 2 CPUs, {args.actors} segment actors "
              "(toy model on the CPU), chunk 16 / overlap 4, 128x96\n\n")
    out.write("| videos | dispatch order | wall s | relay wait, all chunks (actor-s) | longest single wait s |"
              " longest wait, long video s |\n|---|---|---|---|---|---|\n")
    try:
        for short in sorted({0, args.short}):
            manifest = _manifest(root, args.long_frames, short)
            for per_video, name in ((args.actors, "video after video (before)"), (1, "interleaved, cap 1 (after)")):
                r = run_once(manifest, root / f"out-{short}-{per_video}", args.actors, per_video)
                what = f"1 x {args.long_frames} frames" + (f" + {short} x 48" if short else "")
                out.write(f"| {what} | {name} | {r['wall_s']:.1f} | {r['wait_s']:.1f} | {r['max_wait_s']:.2f} | "
                          f"{r['long_max_wait_s']:.2f} |\n")
                out.flush()
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
