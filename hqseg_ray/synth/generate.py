"""Synthetic scenes (training images) and videos (benchmark clips), deterministic by seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from hqseg_ray.synth.render import (SHAPES, Pose, make_background, min_scale, random_sprite, render,
                                    finish)


@dataclass
class Scene:
    """One synthetic image.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        masks: ``[K, H, W]`` bool, visible part of each object (object k+1 is ``masks[k]``).
        shapes: shape name of each object.
    """

    image: np.ndarray
    masks: np.ndarray
    shapes: list[str]


@dataclass
class Video:
    """One synthetic clip.

    Attributes:
        frames: ``[T, H, W, 3]`` uint8 RGB.
        annotations: ``[T, H, W]`` uint8 instance ids (0 = background, DAVIS convention).
        objects: ``{object_id: shape}``.
        video_id: name used on disk.
    """

    frames: np.ndarray
    annotations: np.ndarray
    objects: dict[int, str]
    video_id: str = "video"

    def mask(self, t: int, object_id: int) -> np.ndarray:
        return self.annotations[t] == object_id

    def box(self, t: int, object_id: int, min_area: int = 1) -> Optional[list[int]]:
        """Tight XYXY box (x2, y2 inclusive + 1) of the object on frame t, or None if (almost) absent."""
        m = self.mask(t, object_id)
        if m.sum() < min_area:
            return None
        ys, xs = np.nonzero(m)
        return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def generate_scene(seed_or_rng, size: tuple[int, int] = (256, 256), n_objects: tuple[int, int] = (1, 6),
                   shape_weights: Optional[dict[str, float]] = None, min_area: int = 40) -> Scene:
    """A still scene with 1..6 overlapping objects on a cluttered textured background.

    Args:
        seed_or_rng: int seed or ``numpy.random.Generator``.
        size: (H, W) in pixels.
        n_objects: inclusive range of the number of objects.
        shape_weights: relative frequency per shape name (default uniform); hard-example mixing.
        min_area: objects whose visible area ends below this are dropped from the masks.
    """
    rng = np.random.default_rng(seed_or_rng) if not isinstance(seed_or_rng, np.random.Generator) else seed_or_rng
    h, w = size
    k = int(rng.integers(n_objects[0], n_objects[1] + 1))
    probs = None
    if shape_weights:
        probs = np.array([shape_weights.get(s, 1.0) for s in SHAPES], float)
        probs /= probs.sum()
    bg = make_background(rng, h, w)
    sprites, poses = [], []
    short = min(h, w)
    for i in range(k):
        sp = random_sprite(rng, str(rng.choice(SHAPES, p=probs)), z=i)
        lo = max(min_scale(sp, 4.0), short * 0.06)
        hi = max(lo * 1.2, short * 0.35)
        scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        poses.append(Pose(cx=float(rng.uniform(0.1, 0.9) * w), cy=float(rng.uniform(0.1, 0.9) * h), scale=scale,
                          angle=float(rng.uniform(0, 2 * np.pi)), squash=float(rng.uniform(-0.2, 0.2)),
                          phase=float(rng.uniform(0, 2 * np.pi))))
        sprites.append(sp)
    img, idmap = render(bg, sprites, poses)
    img = finish(img, rng, blur=float(rng.uniform(0.0, 0.9)), noise=float(rng.uniform(0.0, 5.0)))
    masks, shapes = [], []
    for i, sp in enumerate(sprites):
        m = idmap == i + 1
        if m.sum() >= min_area:
            masks.append(m)
            shapes.append(sp.shape)
    masks_arr = np.stack(masks) if masks else np.zeros((0, h, w), bool)
    return Scene(image=img, masks=masks_arr, shapes=shapes)


def generate_video(seed: int, frames: int = 48, size: tuple[int, int] = (240, 320),
                   n_objects: tuple[int, int] = (1, 6), video_id: Optional[str] = None,
                   pan: bool = True) -> Video:
    """A clip whose objects translate, rotate, scale and deform, occlude one another, may leave
    the frame and come back, under a panning camera. Every object is visible on frame 0.

    Args:
        seed: the clip is a pure function of (seed, frames, size, n_objects, pan).
        frames: number of frames T.
        size: (H, W) of the frames.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    margin = int(0.25 * max(h, w)) if pan else 0
    bh, bw = h + 2 * margin, w + 2 * margin
    bg = make_background(rng, bh, bw, clutter=24)
    k = int(rng.integers(n_objects[0], n_objects[1] + 1))
    short = min(h, w)
    # camera: smooth pan inside the margin
    t = np.arange(frames, dtype=np.float64)
    pf = rng.uniform(0.5, 1.5, 2) * 2 * np.pi / max(frames, 2)
    pp = rng.uniform(0, 2 * np.pi, 2)
    cam_x = margin + margin * 0.9 * np.sin(pf[0] * t + pp[0]) if pan else np.zeros(frames)
    cam_y = margin + margin * 0.6 * np.sin(pf[1] * t + pp[1]) if pan else np.zeros(frames)

    sprites, tracks = [], []
    for i in range(k):
        sp = random_sprite(rng, z=i)
        lo = max(min_scale(sp, 5.0), short * 0.07)
        hi = max(lo * 1.2, short * 0.28)
        s0 = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        # start inside the frame-0 view
        x = cam_x[0] + rng.uniform(0.2, 0.8) * w
        y = cam_y[0] + rng.uniform(0.2, 0.8) * h
        speed = rng.uniform(0.5, 4.0)
        heading = rng.uniform(0, 2 * np.pi)
        vx, vy = speed * np.cos(heading), speed * np.sin(heading)
        leaves = rng.random() < 0.3  # bounce off a region wider than the view: leaves and returns
        pad = (0.6 * s0 + 0.2 * w) if leaves else -0.5 * s0
        xmin, xmax = -pad, bw + pad
        ymin, ymax = -pad, bh + pad
        if not leaves:
            xmin, xmax, ymin, ymax = margin * 0.5 + s0, bw - margin * 0.5 - s0, margin * 0.5 + s0, bh - margin * 0.5 - s0
        omega = rng.uniform(-0.08, 0.08)
        a0 = rng.uniform(0, 2 * np.pi)
        sq_amp, sq_f = rng.uniform(0, 0.2), rng.uniform(0.05, 0.2)
        sc_amp, sc_f = rng.uniform(0, 0.25), rng.uniform(0.02, 0.1)
        ph_f = rng.uniform(0.05, 0.2)
        poses = []
        for ti in range(frames):
            poses.append(Pose(cx=float(x), cy=float(y), scale=float(s0 * (1 + sc_amp * np.sin(sc_f * ti))),
                              angle=float(a0 + omega * ti), squash=float(sq_amp * np.sin(sq_f * ti)),
                              phase=float(ph_f * ti)))
            x, y = x + vx, y + vy
            if xmax > xmin:
                if x < xmin or x > xmax:
                    vx = -vx
                    x = float(np.clip(x, xmin, xmax))
            if ymax > ymin:
                if y < ymin or y > ymax:
                    vy = -vy
                    y = float(np.clip(y, ymin, ymax))
        sprites.append(sp)
        tracks.append(poses)

    # every object must be visible on frame 0 (it gets a frame-0 prompt): drop hidden ones
    _, id0 = render(bg, sprites, [tr[0] for tr in tracks], (cam_x[0], cam_y[0]), (h, w))
    keep = [i for i in range(k) if (id0 == i + 1).sum() >= 30]
    sprites = [sprites[i] for i in keep]
    tracks = [tracks[i] for i in keep]
    out = np.zeros((frames, h, w, 3), np.uint8)
    ann = np.zeros((frames, h, w), np.uint8)
    noise, blur = float(rng.uniform(0.5, 3.0)), float(rng.uniform(0.3, 0.8))
    for ti in range(frames):
        img, idmap = render(bg, sprites, [tr[ti] for tr in tracks], (cam_x[ti], cam_y[ti]), (h, w))
        out[ti] = finish(img, rng, blur=blur, noise=noise)
        ann[ti] = idmap
    objects = {i + 1: sp.shape for i, sp in enumerate(sprites)}
    return Video(frames=out, annotations=ann, objects=objects, video_id=video_id or f"synth_{seed:06d}")
