"""Can the CPU side of a segment actor feed a GPU? Non-model CPU of the tracker per frame.

The tracker runs with an *instant* fake engine (:class:`InstantEngine`): ``encode`` returns empty
embeddings and ``decode_low_res`` draws each prompted object's true ellipse into the low-res
logit grid, so what is left is the tracker's own work (prompts, flow, masks, decisions, the
full-resolution upsampling and RLE) -- the CPU cost that stands between two GPU calls. The video
is synthetic 1080p (textured ellipses moving over a textured background), handed to the tracker
the way the bulk job does: frames resized to the model's input size, ``original_size`` 1080p.

Per frame it reports
* ``critical_ms``: CPU of the thread that runs ``track_chunk`` (the actor's critical path), the
  fake engine's own time taken out;
* ``total_ms``: CPU of the whole process (every thread: the background upsampling / RLE pool
  included), the fake engine's time taken out;
* ``max_fps``: ``1000 / critical_ms``, the frames per second one actor's CPU side allows, to set
  beside what the GPU can take (``TARGET_FPS``: vit_h in bf16 on an H100 encodes about 65 frames/s).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Optional, Sequence

import numpy as np
import torch

TARGET_FPS = 65.0  # vit_h bf16 on one H100 (issue 19's measurement)
FRAME_SIZE = (1080, 1920)


class InstantEngine:
    """The parts of ``SegEngine`` the tracker uses, with a model that costs (almost) nothing.

    ``objects(t)`` gives the ellipses ``[K, 5]`` (cx, cy, rx, ry, angle) on frame t in original
    pixels; a prompt decodes to the ellipse whose centre is nearest the prompt box's centre.
    ``postprocess`` is the real ``SegEngine.postprocess`` (the upsampling is tracker-side work).
    ``model_s`` / ``model_cpu_s`` accumulate the fake model's own wall / thread-CPU time.
    """

    def __init__(self, image_size: int, low_res: int, original_size: tuple[int, int], objects, label: str):
        from hqseg_ray.model.engine import preprocess_shape

        self.image_size = int(image_size)
        self.low_res_size = (int(low_res), int(low_res))
        self.original_size = tuple(original_size)
        self.input_size = preprocess_shape(*original_size, image_size)
        self.objects = objects
        self.label = label
        self.config = SimpleNamespace(encode_batch=4, decode_batch=8, multimask=False)
        self.stats = {"encoded_frames": 0, "encode_calls": 0, "decoded_prompts": 0, "decode_calls": 0}
        self.device = torch.device("cpu")
        self.model_cpu_s = 0.0
        lh, lw = self.low_res_size
        f = lw / self.image_size * self.input_size[1] / original_size[1]  # original px -> low-res cells
        self._f = f
        self._yy, self._xx = np.mgrid[0:lh, 0:lw].astype(np.float32) / f

    def encode(self, frames, original_sizes=None):
        from hqseg_ray.model.engine import FrameEmbeddings

        c0 = time.thread_time()
        n = len(frames)
        self.stats["encoded_frames"] += n
        self.stats["encode_calls"] += 1
        emb = FrameEmbeddings(torch.zeros(n, 1, 1, 1), torch.zeros(n, 1, 1, 1), [self.original_size] * n,
                              [self.input_size] * n)
        self.model_cpu_s += time.thread_time() - c0
        return emb

    def decode_low_res(self, embeddings, prompts: Sequence, multimask=None, hq_token_only=None):
        c0 = time.thread_time()
        out = np.empty((len(prompts),) + self.low_res_size, np.float32)
        for i, p in enumerate(prompts):
            ell = self.objects(p.frame)
            if p.box is not None:
                c = np.array([(p.box[0] + p.box[2]) / 2, (p.box[1] + p.box[3]) / 2])
            else:
                c = np.asarray(p.points, np.float64).reshape(-1, 2)[0]
            k = int(np.argmin(np.hypot(ell[:, 0] - c[0], ell[:, 1] - c[1])))
            cx, cy, rx, ry, a = ell[k]
            dx, dy = self._xx - cx, self._yy - cy
            u = (dx * np.cos(a) + dy * np.sin(a)) / rx
            v = (-dx * np.sin(a) + dy * np.cos(a)) / ry
            out[i] = (1.0 - np.sqrt(u * u + v * v)) * 20.0
        self.stats["decoded_prompts"] += len(prompts)
        self.stats["decode_calls"] += 1
        res = torch.from_numpy(out), torch.full((len(prompts),), 0.95)
        self.model_cpu_s += time.thread_time() - c0
        return res

    def postprocess(self, embeddings, frames, logits_lr, return_logits: bool = False):
        from hqseg_ray.model.engine import SegEngine

        return SegEngine.postprocess(self, embeddings, frames, logits_lr, return_logits=return_logits)


def synthetic_video(n_frames: int, n_objects: int, size=FRAME_SIZE, input_long: int = 1024, seed: int = 0):
    """(frames resized to long side ``input_long`` uint8 ``[T, h, w, 3]``, objects(t) -> ``[K, 5]``)."""
    import cv2

    rng = np.random.default_rng(seed)
    H, W = size
    s = input_long / max(H, W)
    h, w = int(H * s + 0.5), int(W * s + 0.5)
    bg = cv2.resize(rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8), (w, h),
                    interpolation=cv2.INTER_LINEAR)
    cols = int(np.ceil(np.sqrt(n_objects)))
    rows = int(np.ceil(n_objects / cols))
    base = []
    for k in range(n_objects):
        r, c = divmod(k, cols)
        cx, cy = (c + 0.5) * W / cols, (r + 0.5) * H / rows
        rx, ry = 0.28 * W / cols, 0.25 * H / rows
        base.append([cx, cy, rx, ry, rng.uniform(0, np.pi), rng.uniform(-3, 3), rng.uniform(-2, 2)])
    base = np.asarray(base, np.float64)

    def objects(t: int) -> np.ndarray:
        e = base[:, :5].copy()
        e[:, 0] += base[:, 5] * t
        e[:, 1] += base[:, 6] * t
        e[:, 4] += 0.01 * t
        return e

    colours = rng.integers(30, 225, (n_objects, 3))
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    for t in range(n_frames):
        f = np.roll(bg, t, axis=1).copy()
        for k, (cx, cy, rx, ry, a) in enumerate(objects(t)):
            cv2.ellipse(f, (int(cx * s), int(cy * s)), (int(rx * s), int(ry * s)), float(np.degrees(a)), 0, 360,
                        tuple(int(v) for v in colours[k]), -1)
            cv2.circle(f, (int(cx * s), int(cy * s)), max(2, int(rx * s / 4)), (255, 255, 255), -1)
        frames[t] = f
    return frames, objects


def measure(image_size: int, low_res: int, n_objects: int, n_frames: int = 12, label: str = "",
            size=FRAME_SIZE, config=None) -> dict:
    """Track ``n_objects`` (frame-0 box prompts) through ``n_frames`` 1080p frames with the instant
    engine; returns per-frame non-model CPU (see the module docstring)."""
    from hqseg_ray.track.tracker import track_chunk

    frames, objects = synthetic_video(n_frames, n_objects, size, image_size)
    eng = InstantEngine(image_size, low_res, size, objects, label)
    boxes = [[cx - rx, cy - ry, cx + rx, cy + ry] for cx, cy, rx, ry, _ in objects(0)]
    prompts = [{"frame": 0, "object_id": k + 1, "box": b} for k, b in enumerate(boxes)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        track_chunk(eng, frames[:2], [0, 1], prompts[:1], config, original_size=size)  # warm-up (imports, caches)
        eng.model_cpu_s = 0.0
        c0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
        res = track_chunk(eng, frames, range(n_frames), prompts, config, original_size=size)
        crit = time.thread_time() - c0 - eng.model_cpu_s
        total = time.process_time() - p0 - eng.model_cpu_s
        wall = time.perf_counter() - w0
    finally:
        torch.set_num_threads(threads)
    kept = sum(1 for e in res.entries for v in e.values() if v.rle is not None)
    crit_ms, total_ms = 1000 * crit / n_frames, 1000 * total / n_frames
    return {"model": label, "input_size": image_size, "objects": n_objects, "frames": n_frames,
            "frame_size": list(size), "critical_ms": round(crit_ms, 2), "total_ms": round(total_ms, 2),
            "wall_ms": round(1000 * wall / n_frames, 2), "masks_kept": kept,
            "max_fps": round(1000 / max(crit_ms, 1e-6), 1),
            "target_fps": TARGET_FPS}


MODELS = {"toy": (256, 64), "vit_tiny": (1024, 256)}


def feed_table(objects: Sequence[int] = (1, 5, 20), frames: int = 12,
               models: Sequence[str] = ("toy", "vit_tiny")) -> list[dict]:
    """:func:`measure` for each model geometry and object count."""
    return [measure(*MODELS[m], k, frames, label=m) for m in models for k in objects]


CRITICAL_TARGET_MS = 15.0   # issue 19: critical-path non-model CPU per 1080p frame, 5 objects
TOTAL_TARGET_MS = 250.0     # issue 19: total non-model CPU, 0.25 core-seconds per frame, 5 objects


def feed_targets(feed: Optional[dict]) -> list[tuple]:
    """``(metric, value, target, met)`` rows of ``hqseg bench``'s table for the 5-object rows."""
    rows = []
    for r in (feed or {}).get("rows", []):
        if r["objects"] != 5:
            continue
        c, t = r["critical_ms"], r["total_ms"]
        rows.append((f"tracker non-model CPU on the actor's critical path, ms/frame, 1080p, 5 objects ({r['model']})",
                     c, f"<= {CRITICAL_TARGET_MS:g}", c <= CRITICAL_TARGET_MS))
        rows.append((f"tracker non-model CPU in total, ms/frame, 1080p, 5 objects ({r['model']})", t,
                     f"<= {TOTAL_TARGET_MS:g}", t <= TOTAL_TARGET_MS))
    return rows


def feed_markdown(feed: dict) -> list[str]:
    """The projection table: per model and object count, CPU ms/frame and the frames/s it allows."""
    lines = ["| CPU feed projection (instant fake engine, 1080p) | objects | critical-path CPU ms/frame | "
             "total CPU ms/frame | max frames/s per actor (CPU side) | GPU target frames/s |",
             "|---|---|---|---|---|---|"]
    for r in feed.get("rows", []):
        lines.append(f"| {r['model']} geometry ({r['input_size']} px input) | {r['objects']} | "
                     f"{r['critical_ms']:.1f} | {r['total_ms']:.1f} | {r['max_fps']:.0f} | {r['target_fps']:.0f} |")
    return lines


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    for row in feed_table(frames=n):
        print(json.dumps(row), flush=True)
