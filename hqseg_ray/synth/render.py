"""Procedural shapes, textures and rendering for synthetic scenes (numpy + OpenCV only).

A :class:`Sprite` is one object: a unit-size contour (plus an inner hole for rings), a texture
in its own coordinates, and a z-order. :class:`Pose` places it in the world for one frame
(centre in pixels, scale in pixels, rotation, anisotropic squash, blob deformation phase).
:func:`render` paints a background crop and the sprites in z-order and returns the image and the
instance id map (the visible part of each object; 0 is background).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np

SHAPES = ("ellipse", "polygon", "star", "blob", "bar", "ring")
_N_CONTOUR = 72


@dataclass
class Pose:
    """Placement of a sprite in world pixels for one frame."""

    cx: float
    cy: float
    scale: float          # pixels per unit of the sprite's contour (roughly its radius)
    angle: float = 0.0    # radians
    squash: float = 0.0   # anisotropic deformation: x *= 1 + squash, y *= 1 - squash
    phase: float = 0.0    # blob deformation phase (radians)


@dataclass
class Sprite:
    """One object: shape, fill, z-order. Contours are in unit coordinates around (0, 0)."""

    shape: str
    texture: np.ndarray               # [T, T, 3] uint8, covers unit coords [-1.5, 1.5]^2
    z: int = 0
    aspect: float = 1.0               # y stretch of the contour (ellipses, bars)
    params: dict = field(default_factory=dict)

    def contours(self, phase: float = 0.0) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """(outer ``[N, 2]`` float, hole ``[M, 2]`` or None) in unit coordinates."""
        p = self.params
        th = np.linspace(0, 2 * np.pi, _N_CONTOUR, endpoint=False)
        hole = None
        if self.shape == "ellipse":
            pts = np.stack([np.cos(th), self.aspect * np.sin(th)], 1)
        elif self.shape == "polygon":
            a, r = np.asarray(p["angles"]), np.asarray(p["radii"])
            pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
        elif self.shape == "star":
            n, inner = p["n"], p["inner"]
            a = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
            r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
            pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
        elif self.shape == "blob":
            r = np.ones_like(th)
            for k, amp, ph in zip(p["ks"], p["amps"], p["phases"]):
                r = r + amp * np.cos(k * th + ph + phase * (1 + 0.3 * k))
            pts = np.stack([r * np.cos(th), r * np.sin(th)], 1) / max(1.0, float(r.max()))
        elif self.shape == "bar":
            w, bend = p["width"], p["bend"]
            xs = np.linspace(-1, 1, 24)
            yc = bend * (xs ** 2 - 1 / 3)
            top = np.stack([xs, yc - w], 1)
            bot = np.stack([xs[::-1], yc[::-1] + w], 1)
            pts = np.concatenate([top, bot])
        elif self.shape == "ring":
            pts = np.stack([np.cos(th), self.aspect * np.sin(th)], 1)
            hole = pts * p["inner"]
        else:
            raise ValueError(f"unknown shape {self.shape!r}; known: {SHAPES}")
        return pts, hole


def _transform(pts: np.ndarray, pose: Pose) -> np.ndarray:
    sx, sy = pose.scale * (1 + pose.squash), pose.scale * (1 - pose.squash)
    c, s = np.cos(pose.angle), np.sin(pose.angle)
    x, y = pts[:, 0] * sx, pts[:, 1] * sy
    return np.stack([c * x - s * y + pose.cx, s * x + c * y + pose.cy], 1)


def _affine(pose: Pose, tex_size: int) -> np.ndarray:
    """2x3 matrix taking texture pixels to world pixels."""
    k = 1.5 / (tex_size / 2)
    sx, sy = pose.scale * (1 + pose.squash) * k, pose.scale * (1 - pose.squash) * k
    c, s = np.cos(pose.angle), np.sin(pose.angle)
    a = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
    b = np.array([pose.cx, pose.cy]) - a @ np.array([tex_size / 2, tex_size / 2])
    return np.concatenate([a, b[:, None]], 1)


# ------------------------------------------------------------------------------------------
# Colours and textures
# ------------------------------------------------------------------------------------------

def random_color(rng: np.random.Generator) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(40, 256), rng.integers(50, 256)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def make_texture(rng: np.random.Generator, h: int, w: int, base: Optional[np.ndarray] = None,
                 kind: Optional[str] = None) -> np.ndarray:
    """``[h, w, 3]`` uint8 fill: flat, noise, stripes, checker or gradient around ``base``."""
    base = random_color(rng) if base is None else base
    kind = kind or rng.choice(["flat", "flat", "noise", "stripes", "checker", "gradient"])
    if kind == "flat":
        return np.ascontiguousarray(np.broadcast_to(base, (h, w, 3)).astype(np.uint8))
    if kind == "noise":
        cells = int(rng.integers(3, 12))
        low = rng.normal(0, 1, (cells, cells, 3)).astype(np.float32)
        n = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
        out = base + n * float(rng.uniform(10, 45))
    elif kind in ("stripes", "checker"):
        other = random_color(rng)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        period = float(rng.uniform(6, 24))
        a = float(rng.uniform(0, np.pi))
        u = (np.cos(a) * xx + np.sin(a) * yy) / period
        if kind == "stripes":
            t = (np.sin(2 * np.pi * u) > 0)
        else:
            v = (-np.sin(a) * xx + np.cos(a) * yy) / period
            t = (np.floor(u) + np.floor(v)) % 2 == 0
        mix = float(rng.uniform(0.3, 1.0))
        out = np.where(t[..., None], base, base * (1 - mix) + other * mix)
    else:  # gradient
        other = random_color(rng)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = float(rng.uniform(0, 2 * np.pi))
        t = (np.cos(a) * xx / max(w, 1) + np.sin(a) * yy / max(h, 1))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        out = base * (1 - t[..., None]) + other * t[..., None]
    return np.ascontiguousarray(np.clip(out, 0, 255).astype(np.uint8))


def make_background(rng: np.random.Generator, h: int, w: int, clutter: int = 12) -> np.ndarray:
    """Textured background with clutter (small shapes and lines that are not objects)."""
    bg = make_texture(rng, h, w, kind=str(rng.choice(["noise", "noise", "gradient", "stripes", "flat"])))
    bg = bg.astype(np.float32)
    # large soft blotches
    low = rng.normal(0, 1, (4, 4, 3)).astype(np.float32)
    bg += cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC) * float(rng.uniform(5, 30))
    bg = np.ascontiguousarray(np.clip(bg, 0, 255).astype(np.uint8))
    for _ in range(int(rng.integers(clutter // 2, clutter + 1))):
        col = tuple(int(c) for c in random_color(rng))
        kind = rng.integers(0, 3)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(3, max(4, min(h, w) // 12)))
        if kind == 0:
            cv2.circle(bg, (x, y), r, col, -1, cv2.LINE_AA)
        elif kind == 1:
            x2, y2 = x + int(rng.integers(-4 * r, 4 * r)), y + int(rng.integers(-4 * r, 4 * r))
            cv2.line(bg, (x, y), (x2, y2), col, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            cv2.rectangle(bg, (x, y), (x + r, y + int(rng.integers(2, 2 * r + 3))), col, -1)
    return bg


# ------------------------------------------------------------------------------------------
# Sprites
# ------------------------------------------------------------------------------------------

def random_sprite(rng: np.random.Generator, shape: Optional[str] = None, z: int = 0,
                  tex_size: int = 96) -> Sprite:
    shape = shape or str(rng.choice(SHAPES))
    params: dict = {}
    aspect = 1.0
    if shape == "ellipse":
        aspect = float(rng.uniform(0.35, 1.0))
    elif shape == "polygon":
        n = int(rng.integers(3, 9))
        a = np.sort(np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(-0.25, 0.25, n) * 2 * np.pi / n)
        params = {"angles": (a + rng.uniform(0, 2 * np.pi)).tolist(), "radii": rng.uniform(0.6, 1.0, n).tolist()}
    elif shape == "star":
        params = {"n": int(rng.integers(4, 8)), "inner": float(rng.uniform(0.35, 0.6))}
    elif shape == "blob":
        ks = rng.choice([2, 3, 4, 5], size=3, replace=False)
        params = {"ks": ks.tolist(), "amps": rng.uniform(0.05, 0.22, 3).tolist(),
                  "phases": rng.uniform(0, 2 * np.pi, 3).tolist()}
    elif shape == "bar":
        params = {"width": float(rng.uniform(0.07, 0.16)), "bend": float(rng.choice([0.0, rng.uniform(-0.3, 0.3)]))}
    elif shape == "ring":
        aspect = float(rng.uniform(0.6, 1.0))
        params = {"inner": float(rng.uniform(0.5, 0.75))}
    tex = make_texture(rng, tex_size, tex_size)
    return Sprite(shape=shape, texture=np.ascontiguousarray(tex), z=z, aspect=aspect, params=params)


def min_scale(sprite: Sprite, min_px: float = 5.0) -> float:
    """Smallest scale (px per unit) at which the sprite's thinnest part is ``min_px`` wide."""
    if sprite.shape == "bar":
        return min_px / (2 * sprite.params["width"])
    if sprite.shape == "ring":
        return min_px / (sprite.aspect * (1 - sprite.params["inner"]))
    if sprite.shape == "ellipse":
        return min_px / (2 * sprite.aspect)
    return min_px


def render(background: np.ndarray, sprites: Sequence[Sprite], poses: Sequence[Optional[Pose]],
           offset: tuple[float, float] = (0.0, 0.0), size: Optional[tuple[int, int]] = None,
           ids: Optional[Sequence[int]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Paint sprites over a crop of the background.

    Args:
        background: ``[BH, BW, 3]`` uint8 world canvas.
        sprites, poses: one pose per sprite in world pixels (None: not drawn).
        offset: (x, y) world position of the crop's top-left corner (camera pan).
        size: (H, W) of the crop; defaults to the whole background.
        ids: instance id of each sprite (default 1..K).

    Returns:
        image ``[H, W, 3]`` uint8 RGB, id map ``[H, W]`` uint8 (0 = background).
    """
    h, w = size or background.shape[:2]
    ox, oy = offset
    ix, iy = int(round(ox)), int(round(oy))
    img = background[iy:iy + h, ix:ix + w].copy()
    if img.shape[:2] != (h, w):
        raise ValueError(f"crop at {offset} of size {(h, w)} falls outside the background {background.shape[:2]}")
    idmap = np.zeros((h, w), np.uint8)
    ids = list(ids) if ids is not None else list(range(1, len(sprites) + 1))
    order = sorted(range(len(sprites)), key=lambda i: sprites[i].z)
    for i in order:
        pose = poses[i]
        if pose is None:
            continue
        sp = sprites[i]
        local = Pose(pose.cx - ix, pose.cy - iy, pose.scale, pose.angle, pose.squash, pose.phase)
        outer, hole = sp.contours(pose.phase)
        pts = _transform(outer, local)
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        bw, bh = x1 - x0, y1 - y0
        m = np.zeros((bh, bw), np.uint8)
        shift = np.array([x0, y0], np.float64)
        cv2.fillPoly(m, [np.round((pts - shift) * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
        if hole is not None:
            cv2.fillPoly(m, [np.round((_transform(hole, local) - shift) * 16).astype(np.int32)], 0,
                         cv2.LINE_8, shift=4)
        sel = m.astype(bool)
        if not sel.any():
            continue
        a = _affine(local, sp.texture.shape[0])
        a[:, 2] -= shift
        tex = cv2.warpAffine(sp.texture, a, (bw, bh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        img[y0:y1, x0:x1][sel] = tex[sel]
        idmap[y0:y1, x0:x1][sel] = ids[i]
    return img, idmap


def finish(img: np.ndarray, rng: np.random.Generator, blur: float = 0.6, noise: float = 3.0) -> np.ndarray:
    """Camera look: a slight blur (soft edges) and sensor noise."""
    out = img
    if blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), blur)
    if noise > 0:
        out = np.clip(out.astype(np.float32) + rng.normal(0, noise, out.shape).astype(np.float32), 0, 255)
    return out.astype(np.uint8)
