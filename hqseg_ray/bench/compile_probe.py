"""``torch.compile`` of the image encoder, measured in a child process with a time limit.

    python -m hqseg_ray.bench.compile_probe --checkpoint toy.pt --frames 8 --threads 1

Prints one JSON object: compile seconds (first call), eager and compiled seconds per frame. A
child process because a compile can take minutes on a CPU and may hang or crash the compiler;
the benchmark kills it at its time limit and records why the number is missing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Optional


def _measure(checkpoint: str, frames: int, threads: int) -> dict:
    import numpy as np
    import torch

    from hqseg_ray.config import ModelConfig
    from hqseg_ray.model.engine import SegEngine

    torch.set_num_threads(threads)
    cfg = ModelConfig(type="toy", checkpoint=checkpoint, device="cpu")
    eager = SegEngine.load(cfg)
    compiled = SegEngine(eager.sam, cfg.model_copy(update={"compile": True}), eager.info)
    s = eager.image_size
    x = np.random.default_rng(0).integers(0, 255, (frames, s, s, 3), dtype=np.uint8)
    eager.encode(x[:1])
    t0 = time.perf_counter()
    compiled.encode(x)  # first call compiles (encode_batch-sized and tail batches)
    compile_s = time.perf_counter() - t0
    out = {"compile_s": compile_s}
    for name, eng in (("eager", eager), ("compiled", compiled), ("eager2", eager), ("compiled2", compiled)):
        t0 = time.perf_counter()
        eng.encode(x)
        out[name] = (time.perf_counter() - t0) / frames
    return {"compile_s": round(compile_s, 2), "eager_s_per_frame": min(out["eager"], out["eager2"]),
            "compiled_s_per_frame": min(out["compiled"], out["compiled2"]),
            "speedup": min(out["eager"], out["eager2"]) / min(out["compiled"], out["compiled2"])}


def run_probe(checkpoint: str, frames: int, threads: int, timeout_s: float) -> dict:
    """Run the probe in a child process; returns its result or ``{"not_measured": reason}``."""
    cmd = [sys.executable, "-m", "hqseg_ray.bench.compile_probe", "--checkpoint", checkpoint,
           "--frames", str(frames), "--threads", str(threads)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"not_measured": f"torch.compile did not finish within {timeout_s:.0f} s on this CPU (killed)"}
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return {"not_measured": f"torch.compile failed on this CPU: {tail[0][:300]}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["child_wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hqseg_ray.bench.compile_probe")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    sys.stdout.write(json.dumps(_measure(args.checkpoint, args.frames, args.threads)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
