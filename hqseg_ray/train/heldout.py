"""Accuracy of a model through ``SegEngine`` on freshly generated held-out scenes and clips.

    from hqseg_ray.train.heldout import engine_accuracy
    engine_accuracy(SegEngine.load(ModelConfig(type="toy", device="cpu")), scenes=24, videos=4)

Prompts, per object (all in original-frame pixels, deterministic by seed):
- ``point1``: one positive point at the object's most interior pixel (distance-transform peak);
- ``point3``: that point, one more random interior point and one negative point near the object;
- ``box``: the tight box;
- on clips, frame t prompted with its tight box alone (``video_box``) and with the box plus the
  low-res logits the engine returned for the same object's box on frame t-1, moved by the
  object's displacement from t-1 to t (``video_box_mask``): what the tracker feeds the model (it
  moves the logits by the optical-flow motion; here the true box-centre shift stands in for the
  flow). ``video_box_mask_unmoved`` feeds the t-1 logits as they are, for comparison.
"""

from __future__ import annotations

import time
from typing import Optional

import cv2
import numpy as np

from hqseg_ray.prompts import Prompt
from hqseg_ray.synth import generate_scene, generate_video
from hqseg_ray.track.motion import LowResGeometry, Motion

TEST_SEED = 20261122  # never a training seed (training draws from default_rng(--seed))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(a | b)
    return 1.0 if u == 0 else np.count_nonzero(a & b) / u


def _box(m: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(m)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def interior_point(m: np.ndarray) -> list[float]:
    """The pixel farthest from the mask's boundary (centre of the pixel)."""
    d = cv2.distanceTransform(np.pad(m, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return [x + 0.5, y + 0.5]


def scene_prompts(rng: np.random.Generator, m: np.ndarray) -> dict[str, Prompt]:
    p0 = interior_point(m)
    ys, xs = np.nonzero(m)
    i = int(rng.integers(0, len(xs)))
    p1 = [xs[i] + 0.5, ys[i] + 0.5]
    x1, y1, x2, y2 = _box(m)
    h, w = m.shape
    ex, ey = 0.2 * (x2 - x1) + 2, 0.2 * (y2 - y1) + 2
    region = np.zeros_like(m)
    region[int(max(0, y1 - ey)):int(min(h, y2 + ey)), int(max(0, x1 - ex)):int(min(w, x2 + ex))] = True
    region &= ~m
    if region.any():
        ny, nx = np.nonzero(region)
        j = int(rng.integers(0, len(nx)))
        pts, lab = [p0, p1, [nx[j] + 0.5, ny[j] + 0.5]], [1, 1, 0]
    else:
        j = int(rng.integers(0, len(xs)))
        pts, lab = [p0, p1, [xs[j] + 0.5, ys[j] + 0.5]], [1, 1, 1]
    return {"point1": Prompt(points=[p0], labels=[1]), "point3": Prompt(points=pts, labels=lab),
            "box": Prompt(box=_box(m))}


def engine_accuracy(engine, scenes: int = 24, videos: int = 4, frames: int = 8, seed: int = TEST_SEED,
                    scene_size: tuple[int, int] = (240, 320), min_area: int = 40) -> dict:
    """Mean IoU per prompt kind (and per shape for ``box``) of ``engine`` on held-out data.

    Returns ``{"miou": {kind: float}, "n": {kind: int}, "box_by_shape": {shape: float},
    "seconds": float}``.
    """
    t0 = time.time()
    rng = np.random.default_rng(seed)
    ious: dict[str, list[float]] = {}
    by_shape: dict[str, list[float]] = {}
    for s in range(scenes):
        sc = generate_scene(np.random.default_rng([seed, s]), scene_size, min_area=min_area)
        if not len(sc.masks):
            continue
        emb = engine.encode(sc.image[None])
        prompts, keys = [], []
        for k, m in enumerate(sc.masks):
            for kind, p in scene_prompts(rng, m).items():
                prompts.append(Prompt(frame=0, points=p.points, labels=p.labels, box=p.box))
                keys.append((kind, k))
        masks, _, _ = engine.decode(emb, prompts)
        for (kind, k), pm in zip(keys, masks):
            v = _iou(pm, sc.masks[k])
            ious.setdefault(kind, []).append(v)
            if kind == "box":
                by_shape.setdefault(sc.shapes[k], []).append(v)
    for vi in range(videos):
        v = generate_video(int(np.random.SeedSequence([seed, 1000 + vi]).generate_state(1)[0]), frames=frames,
                           size=scene_size)
        emb = engine.encode(v.frames)
        geo = LowResGeometry(scene_size, engine.image_size, engine.low_res_size)
        prev: dict[int, tuple[np.ndarray, list[float]]] = {}
        for t in range(frames):
            present = [o for o in v.objects if v.box(t, o, min_area) is not None]
            boxes = [Prompt(frame=t, box=v.box(t, o), object_id=o) for o in present]
            masks, _, logits = engine.decode(emb, boxes) if boxes else ([], None, [])
            for kind in ("video_box_mask", "video_box_mask_unmoved"):
                with_mask = []
                for o in present:
                    if o not in prev:
                        continue
                    lg, b0 = prev[o]
                    if kind == "video_box_mask":
                        b1 = v.box(t, o)
                        lg = geo.shift_logits(lg, Motion((b1[0] + b1[2] - b0[0] - b0[2]) / 2,
                                                         (b1[1] + b1[3] - b0[1] - b0[3]) / 2))
                    with_mask.append(Prompt(frame=t, box=v.box(t, o), mask_input=lg, object_id=o))
                masks2, _, _ = engine.decode(emb, with_mask) if with_mask else ([], None, None)
                for p, pm in zip(with_mask, masks2):
                    ious.setdefault(kind, []).append(_iou(pm, v.mask(t, p.object_id)))
            for p, pm in zip(boxes, masks):
                if p.object_id in prev:
                    ious.setdefault("video_box", []).append(_iou(pm, v.mask(t, p.object_id)))
            prev = {p.object_id: (lg, p.box) for p, lg in zip(boxes, logits)}
    return {"miou": {k: float(np.mean(x)) for k, x in ious.items()}, "n": {k: len(x) for k, x in ious.items()},
            "box_by_shape": {k: float(np.mean(x)) for k, x in sorted(by_shape.items())},
            "seconds": time.time() - t0}


def engine_speed(engine, n_frames: int = 16, size: tuple[int, int] = (240, 320), repeats: int = 3,
                 seed: Optional[int] = 0) -> dict:
    """Encode ms/frame and decode ms per call of 4 box prompts (median of ``repeats``)."""
    v = generate_video(seed, frames=n_frames, size=size)
    engine.encode(v.frames[:2])  # warm-up
    enc, dec = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        emb = engine.encode(v.frames)
        enc.append((time.perf_counter() - t) * 1000 / n_frames)
        prompts = [Prompt(frame=i % n_frames, box=[20 + i, 20, 120 + i, 140]) for i in range(4 * 8)]
        t = time.perf_counter()
        for i in range(0, len(prompts), 4):
            engine.decode(emb, prompts[i:i + 4])
        dec.append((time.perf_counter() - t) * 1000 / (len(prompts) / 4))
    return {"encode_ms_per_frame": float(np.median(enc)), "decode_ms_per_4": float(np.median(dec)),
            "frame_size": f"{size[1]}x{size[0]}", "encode_batch": engine.config.encode_batch}
