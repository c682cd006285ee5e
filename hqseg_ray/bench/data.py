"""Benchmark inputs: synthetic videos (cached by their parameters) and prompt layouts.

Every scenario of one run reads the same videos, so engine-only, naive and job numbers are
measured on the same frames. Videos are a pure function of their parameters, so they are kept
in a cache folder and reused by later runs (generation is not part of any measurement).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)


def _params_match(root: Path, params: dict) -> bool:
    p = root / "params.json"
    return p.exists() and json.loads(p.read_text()) == params and (root / "manifest.jsonl").exists()


def clips(root: str | Path, videos: int, frames: int, size: tuple[int, int], objects: int, seed: int) -> Path:
    """``videos`` synthetic clips of ``frames`` frames with exactly ``objects`` prompted objects
    (frame-0 boxes); returns the manifest path (reused when already written with these parameters)."""
    from hqseg_ray.synth import write_dataset

    params = {"kind": "clips", "videos": videos, "frames": frames, "size": list(size), "objects": objects,
              "seed": seed}
    root = Path(root) / f"clips_v{videos}_f{frames}_{size[1]}x{size[0]}_o{objects}_s{seed}"
    if not _params_match(root, params):
        manifest = write_dataset(root, videos=videos, frames=frames, seed=seed, size=size,
                                 n_objects=(objects, objects))
        _drop_empty_prompts(manifest)
        (root / "params.json").write_text(json.dumps(params))
    return root / "manifest.jsonl"


def _drop_empty_prompts(manifest: Path) -> None:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    for r in rows:
        r["prompts"] = [p for p in r["prompts"] if p.get("box") is not None]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))


def long_video(root: str | Path, seconds: float, fps: int, size: tuple[int, int], seed: int,
               loop_s: float = 30.0) -> Path:
    """One video of ``seconds`` at ``fps``: a generated clip of at most ``loop_s`` seconds played
    in a loop (streamed to the encoder, so a 10-minute video never sits in memory); its objects'
    frame-0 boxes are the prompts. Returns the manifest path."""
    import av

    from hqseg_ray.synth.generate import generate_video

    n = int(round(seconds * fps))
    params = {"kind": "long", "seconds": seconds, "fps": fps, "size": list(size), "seed": seed, "loop_s": loop_s}
    root = Path(root) / f"long_{int(seconds)}s_{fps}fps_{size[1]}x{size[0]}_s{seed}"
    if _params_match(root, params):
        return root / "manifest.jsonl"
    root.mkdir(parents=True, exist_ok=True)
    clip = generate_video(seed, frames=min(n, int(loop_s * fps)), size=size, n_objects=(2, 2),
                          video_id=f"long_{int(seconds)}s")
    h, w = size
    path = root / f"long_{int(seconds)}s.mp4"
    tmp = root / "tmp.mp4"
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for t in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(clip.frames[t % len(clip.frames)]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    prompts = [{"object_id": oid, "frame": 0, "box": clip.box(0, oid)} for oid in clip.objects]
    row = {"video": str(path.resolve()), "video_id": path.stem, "prompts": [p for p in prompts if p["box"]]}
    (root / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    (root / "params.json").write_text(json.dumps(params))
    logger.info("wrote %s: %d frames at %d fps", path, n, fps)
    return root / "manifest.jsonl"


def manifest_rows(manifest: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(manifest).read_text().splitlines() if line.strip()]


def read_video_frames(video: str, limit: Optional[int] = None) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` frames of a video (the first ``limit``)."""
    from hqseg_ray.video import read_frames

    frames, _, _ = read_frames(video, 0, limit)
    return frames


def grid_boxes(k: int, h: int, w: int) -> np.ndarray:
    """``[k, 4]`` XYXY boxes on a grid covering an ``h x w`` frame (object-scaling prompts: the
    decoder's cost does not depend on what is inside a box)."""
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    bw, bh = w / cols, h / rows
    out = []
    for i in range(k):
        r, c = divmod(i, cols)
        out.append([c * bw + 0.1 * bw, r * bh + 0.1 * bh, (c + 0.9) * bw, (r + 0.9) * bh])
    return np.asarray(out, dtype=np.float64)
