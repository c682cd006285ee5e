"""Training batches for the toy model: synthetic scenes padded to the model input, plus prompts.

Everything here is in *model input* pixels: an image of (h, w) with max(h, w) = S sits at the
top-left of an S x S canvas (zeros elsewhere), as ``SegEngine`` feeds frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from hqseg_ray.synth import generate_scene

# prompt kinds, each decoded as its own group (all prompts of a decoder call share a structure)
KINDS = ("point1", "points3", "box", "box_mask", "box_points_mask")


@dataclass
class Batch:
    """Images ``[B, S, S, 3]`` uint8, input sizes, and per kind the prompts of that kind.

    ``prompts[kind]`` holds ``frame`` [P] int, ``gt`` [P, S, S] bool, ``shape`` list[str] and
    the kind's fields: ``points`` [P, N, 2] float (X, Y), ``labels`` [P, N] int (-1 pad),
    ``box`` [P, 4] float XYXY, ``mask`` [P, s, s] float32 low-res logits (``box_mask*`` kinds).
    """

    images: np.ndarray
    sizes: list[tuple[int, int]]
    prompts: dict[str, dict]


def _sample_points(rng: np.random.Generator, mask: np.ndarray, n: int) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    idx = rng.integers(0, len(xs), n)
    return np.stack([xs[idx] + rng.uniform(0, 1, n), ys[idx] + rng.uniform(0, 1, n)], 1)


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def jitter_box(rng: np.random.Generator, box: np.ndarray, size: tuple[int, int], noise: float = 0.08,
               expand: float = 0.12) -> np.ndarray:
    """SAM-style box noise (std ``noise`` x side, at most 20 px) and tracker-style expansion."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    e = rng.uniform(0, expand) if rng.random() < 0.5 else 0.0
    x1, x2, y1, y2 = x1 - e * bw, x2 + e * bw, y1 - e * bh, y2 + e * bh
    n = rng.normal(0, noise, 4) * np.array([bw, bh, bw, bh])
    n = np.clip(n, -20, 20)
    out = np.array([x1, y1, x2, y2]) + n
    h, w = size
    out[[0, 2]] = np.clip(out[[0, 2]], 0, w)
    out[[1, 3]] = np.clip(out[[1, 3]], 0, h)
    if out[2] - out[0] < 2:
        out[2] = min(w, out[0] + 2)
    if out[3] - out[1] < 2:
        out[3] = min(h, out[1] + 2)
    return out


def one_frame_motion(rng: np.random.Generator, cx: float, cy: float, extent: float, shift_floor: float) -> np.ndarray:
    """A random ``[2, 3]`` affine like one frame of object motion about (cx, cy): rotation (std 6
    degrees), scale (std 6 %), shift (std 5 % of ``extent`` plus ``shift_floor`` pixels)."""
    a = cv2.getRotationMatrix2D((float(cx), float(cy)), float(rng.normal(0, 6)), float(np.exp(rng.normal(0, 0.06))))
    a[:, 2] += rng.normal(0, 0.05 * extent + shift_floor, 2)
    return a


def previous_frame_logits(rng: np.random.Generator, mask: np.ndarray, low: int) -> np.ndarray:
    """Low-res logits ``[low, low]`` of a mask that looks like the object one frame earlier:
    moved, rotated, scaled, eroded or dilated, at the decoder's logit scale."""
    s = mask.shape[0]
    m = mask.astype(np.uint8)
    ys, xs = np.nonzero(m)
    cx, cy = xs.mean(), ys.mean()
    extent = max(xs.max() - xs.min(), ys.max() - ys.min(), 4)
    m = cv2.warpAffine(m, one_frame_motion(rng, cx, cy, extent, 1.0), (s, s), flags=cv2.INTER_NEAREST)
    k = int(rng.integers(-3, 4))
    if k:
        ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(k) + 1, 2 * abs(k) + 1))
        m = cv2.dilate(m, ker) if k > 0 else cv2.erode(m, ker)
    lr = cv2.resize(m.astype(np.float32), (low, low), interpolation=cv2.INTER_AREA)
    amp = rng.uniform(4, 16)
    return ((lr * 2 - 1) * amp).astype(np.float32)


def warp_logits(rng: np.random.Generator, logits: np.ndarray) -> np.ndarray:
    """Move low-res logits ``[P, s, s]`` like one frame of object motion (shift, rotation, scale):
    the model's own output on frame t-1 is misaligned with frame t by that much in the tracker."""
    out = np.empty_like(logits)
    s = logits.shape[-1]
    for i, lg in enumerate(logits):
        pos = lg > 0
        if pos.any():
            ys, xs = np.nonzero(pos)
            cx, cy, extent = xs.mean(), ys.mean(), max(xs.max() - xs.min(), ys.max() - ys.min(), 2)
        else:
            cx = cy = s / 2
            extent = 2
        out[i] = cv2.warpAffine(lg.astype(np.float32), one_frame_motion(rng, cx, cy, extent, 0.25), (s, s),
                                flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=float(lg.min()))
    return out


def make_batch(rng: np.random.Generator, n_images: int, image_size: int, low_res: int,
               shape_weights: Optional[dict[str, float]] = None, kinds=KINDS) -> Batch:
    """``n_images`` scenes, and one prompt of each kind per image (objects drawn at random)."""
    s = image_size
    images = np.zeros((n_images, s, s, 3), np.uint8)
    sizes, gts, shapes = [], [], []
    for i in range(n_images):
        short = int(rng.integers(int(0.56 * s) // 16, s // 16 + 1)) * 16
        h, w = (short, s) if rng.random() < 0.7 else (s, short)
        while True:
            sc = generate_scene(rng, (h, w), shape_weights=shape_weights)
            if len(sc.masks):
                break
        images[i, :h, :w] = sc.image
        sizes.append((h, w))
        g = np.zeros((len(sc.masks), s, s), bool)
        g[:, :h, :w] = sc.masks
        gts.append(g)
        shapes.append(sc.shapes)
    prompts: dict[str, dict] = {}
    box_objects: list[int] = []
    for kind in kinds:
        frame, gt, shp, pts, labs, boxes, masks = [], [], [], [], [], [], []
        for i in range(n_images):
            k = int(rng.integers(0, len(gts[i])))
            if kind == "box_mask" and "box" in kinds:
                k = box_objects[i]  # same object as the box prompt: training may feed its logits
            elif kind == "box":
                box_objects.append(k)
            m = gts[i][k]
            frame.append(i)
            gt.append(m)
            shp.append(shapes[i][k])
            if kind == "point1":
                pts.append(_sample_points(rng, m, 1))
                labs.append([1])
            elif kind in ("points3", "box_points_mask"):
                n_pos = int(rng.integers(1, 3)) if kind == "points3" else 2
                p = [_sample_points(rng, m, n_pos)]
                lab = [1] * n_pos
                if kind == "points3":
                    # negatives near the object (inside an expanded box, outside the mask)
                    x1, y1, x2, y2 = jitter_box(rng, _box(m), sizes[i], 0.0, 0.4)
                    region = np.zeros_like(m)
                    region[int(y1):int(y2), int(x1):int(x2)] = True
                    region &= ~m
                    n_neg = 3 - n_pos if region.any() and rng.random() < 0.8 else 0
                    if n_neg:
                        p.append(_sample_points(rng, region, n_neg))
                        lab += [0] * n_neg
                    while len(lab) < 3:
                        p.append(np.zeros((1, 2)))
                        lab.append(-1)
                pts.append(np.concatenate(p))
                labs.append(lab)
            if kind.startswith("box"):
                boxes.append(jitter_box(rng, _box(m), sizes[i]))
            if kind.endswith("mask"):
                masks.append(previous_frame_logits(rng, m, low_res))
        d = {"frame": np.array(frame), "gt": np.stack(gt), "shape": shp}
        if pts:
            d["points"] = np.stack(pts).astype(np.float32)
            d["labels"] = np.array(labs, np.int64)
        if boxes:
            d["box"] = np.stack(boxes).astype(np.float32)
        if masks:
            d["mask"] = np.stack(masks)
        prompts[kind] = d
    return Batch(images=images, sizes=sizes, prompts=prompts)
