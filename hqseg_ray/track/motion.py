"""Geometry of one propagation step: optical-flow motion, boxes, interior points, logit warps.

Conventions: boxes are ``[4]`` float XYXY in pixels of the original frame (pixel edges, as
``hqseg_ray.masks.mask_to_box``); points ``[N, 2]`` (X, Y) pixels; masks ``[H, W]`` bool at the
original frame size; low-res logits ``[h, w]`` float32 covering the model's padded square input
(the frame resized so its long side is ``image_size``, top-left aligned).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from hqseg_ray.masks import mask_to_box

FLOW_LONG_SIDE = 512  # optical flow runs on grey frames no larger than this (speed; motion is coarse)
LOGIT_FILL = -20.0    # value of logits shifted in from outside (confident background)
_KERNEL = np.ones((5, 5), np.uint8)


@dataclass
class Motion:
    """Motion of one object between two frames: translation (pixels, original frame) and a
    scale factor about the box centre; ``points`` is how many tracked features supported it."""

    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0
    points: int = 0


def to_gray(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """``[H, W, 3]`` uint8 RGB -> (grey uint8 at most FLOW_LONG_SIDE on the long side, factor
    from original pixels to grey pixels)."""
    h, w = frame.shape[:2]
    f = min(1.0, FLOW_LONG_SIDE / max(h, w))
    g = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
    if f < 1.0:
        g = cv2.resize(g, (max(1, int(round(w * f))), max(1, int(round(h * f)))), interpolation=cv2.INTER_AREA)
    return g, f


def estimate_motions(prev_gray: np.ndarray, cur_gray: np.ndarray, factor: float, masks: Sequence[np.ndarray],
                     max_corners: int = 40, min_points: int = 3) -> list[Motion]:
    """Motion of each mask from ``prev_gray`` to ``cur_gray`` with pyramidal Lucas-Kanade.

    Args:
        prev_gray, cur_gray: grey frames from :func:`to_gray` (same size).
        factor: original pixels -> grey pixels.
        masks: ``[H, W]`` bool masks (original size) on the previous frame.
    Returns: one :class:`Motion` per mask; ``points == 0`` when too few features could be tracked
    (textureless object): the caller then falls back to the object's velocity.
    """
    gh, gw = prev_gray.shape
    all_pts, owner = [], []
    for k, m in enumerate(masks):
        m8 = m.astype(np.uint8)
        if m8.shape != (gh, gw):
            m8 = cv2.resize(m8, (gw, gh), interpolation=cv2.INTER_NEAREST)
        # features strictly inside the object: corners on its outline mix in the background's motion
        inner = cv2.erode(m8, _KERNEL) if np.count_nonzero(m8) > 64 else m8
        if np.count_nonzero(inner) < 4:
            continue
        # only the mask's box (and a margin the corner filters reach over) is searched: the same
        # corners as on the whole frame, at the cost of the object's size
        box = mask_to_box(inner)
        x0, y0 = max(0, int(box[0]) - 8), max(0, int(box[1]) - 8)
        x1, y1 = min(gw, int(box[2]) + 8), min(gh, int(box[3]) + 8)
        pts = cv2.goodFeaturesToTrack(np.ascontiguousarray(prev_gray[y0:y1, x0:x1]), maxCorners=max_corners,
                                      qualityLevel=0.01, minDistance=3, mask=np.ascontiguousarray(inner[y0:y1, x0:x1]),
                                      blockSize=5)
        if pts is None or len(pts) < min_points:  # textureless inside: no flow (the caller uses velocity)
            continue
        pts = pts + np.array([x0, y0], np.float32)
        all_pts.append(pts.reshape(-1, 1, 2).astype(np.float32))
        owner += [k] * len(pts)
    out = [Motion() for _ in masks]
    if not all_pts:
        return out
    p0 = np.concatenate(all_pts)
    p1, st, _ = cv2.calcOpticalFlowPyrLK(prev_gray, cur_gray, p0, None, winSize=(15, 15), maxLevel=3,
                                         criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
    if p1 is None:
        return out
    owner_a = np.asarray(owner)
    ok = st.reshape(-1) == 1
    for k in range(len(masks)):
        sel = (owner_a == k) & ok
        n = int(sel.sum())
        if n < min_points:
            continue
        a, b = p0[sel, 0], p1[sel, 0]
        d = b - a
        med = np.median(d, axis=0)
        # robust: drop points far from the median displacement (occluder edges, background)
        resid = np.linalg.norm(d - med, axis=1)
        inl = resid <= max(1.0, 2.5 * np.median(resid) + 1e-6)
        if inl.sum() >= min_points:
            a, b = a[inl], b[inl]
            med = np.median(b - a, axis=0)
        scale = 1.0
        if len(a) >= 4:
            ra = np.linalg.norm(a - a.mean(0), axis=1)
            rb = np.linalg.norm(b - b.mean(0), axis=1)
            good = ra > 2.0
            if good.sum() >= 3:
                scale = float(np.clip(np.median(rb[good] / ra[good]), 0.85, 1.18))
        out[k] = Motion(float(med[0]) / factor, float(med[1]) / factor, scale, int(len(a)))
    return out


def move_box(box: np.ndarray, motion: Motion) -> np.ndarray:
    """Translate a box by the motion and scale it about its centre."""
    x1, y1, x2, y2 = np.asarray(box, np.float64)
    cx, cy = (x1 + x2) / 2 + motion.dx, (y1 + y2) / 2 + motion.dy
    hw, hh = (x2 - x1) / 2 * motion.scale, (y2 - y1) / 2 * motion.scale
    return np.array([cx - hw, cy - hh, cx + hw, cy + hh])


def expand_box(box: np.ndarray, margin: float, size: tuple[int, int]) -> np.ndarray:
    """Grow each side by ``margin`` x the box's width/height (at least 2 px), clip to (H, W)."""
    x1, y1, x2, y2 = np.asarray(box, np.float64)
    mx, my = max(2.0, margin * (x2 - x1)), max(2.0, margin * (y2 - y1))
    h, w = size
    out = np.array([x1 - mx, y1 - my, x2 + mx, y2 + my])
    out[[0, 2]] = np.clip(out[[0, 2]], 0, w)
    out[[1, 3]] = np.clip(out[[1, 3]], 0, h)
    if out[2] - out[0] < 1 or out[3] - out[1] < 1:  # moved outside the frame: keep a sliver at the edge
        out[2], out[3] = max(out[2], min(out[0] + 1, w)), max(out[3], min(out[1] + 1, h))
        out[0], out[1] = min(out[0], out[2] - 1), min(out[1], out[3] - 1)
    return out


def interior_points(mask: np.ndarray, k: int) -> np.ndarray:
    """Up to ``k`` points deep inside ``mask``: the distance-transform maximum, then the next
    maxima outside the circles already taken. Returns ``[n, 2]`` float (X, Y) pixel centres."""
    if k <= 0:
        return np.zeros((0, 2))
    box = mask_to_box(mask)
    if box is None:
        return np.zeros((0, 2))
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = np.pad(mask[y0:y1, x0:x1].astype(np.uint8), 1)
    dist = cv2.distanceTransform(crop, cv2.DIST_L2, 3)[1:-1, 1:-1]
    out = []
    for _ in range(k):
        idx = int(np.argmax(dist))
        r = float(dist.flat[idx])
        if r <= 0:
            break
        py, px = divmod(idx, dist.shape[1])
        out.append((x0 + px + 0.5, y0 + py + 0.5))
        rr = int(np.floor(1.5 * r))  # blank the circle (only its bounding square is looked at)
        ya, yb = max(0, py - rr), min(dist.shape[0], py + rr + 1)
        xa, xb = max(0, px - rr), min(dist.shape[1], px + rr + 1)
        yy, xx = np.ogrid[ya:yb, xa:xb]
        dist[ya:yb, xa:xb][(yy - py) ** 2 + (xx - px) ** 2 <= (1.5 * r) ** 2] = 0
    return np.asarray(out, np.float64).reshape(-1, 2)


WORK_LONG_SIDE = 1024  # the tracker's masks are at most this large on the long side (see LowResGeometry)


class LowResGeometry:
    """Maps original-frame pixels to the model's low-res logit grid and to the tracker's work grid
    for one frame size.

    The *work grid* ``work_size`` (h, w) is where the tracker's masks live and every area, box,
    overlap and colour decision is computed: the frames as the tracker holds them (the model's
    input size when the job resized them; default the original size), at most ``WORK_LONG_SIDE``
    on the long side. Boxes, points, motions and areas stay in original pixels everywhere else
    (``box_to_work`` / ``box_from_work`` / ``px_area`` convert); only the masks written out (RLE)
    are made at the original size (:meth:`full_masks`).
    """

    def __init__(self, original_size: tuple[int, int], image_size: int, low_res_size: tuple[int, int],
                 work_size: Optional[tuple[int, int]] = None):
        h, w = original_size
        scale = image_size / max(h, w)
        self.original_size = (int(h), int(w))
        self.input_size = (int(h * scale + 0.5), int(w * scale + 0.5))
        self.image_size = image_size
        self.low_res_size = (int(low_res_size[0]), int(low_res_size[1]))
        self.fx = self.input_size[1] / w * self.low_res_size[1] / image_size
        self.fy = self.input_size[0] / h * self.low_res_size[0] / image_size
        wh, ww = work_size if work_size is not None else self.original_size
        if max(wh, ww) > WORK_LONG_SIDE:
            f = WORK_LONG_SIDE / max(wh, ww)
            wh, ww = int(wh * f + 0.5), int(ww * f + 0.5)
        self.work_size = (int(wh), int(ww))
        self.sx, self.sy = ww / w, wh / h                     # work pixels per original pixel
        self.px_area = (h * w) / float(wh * ww)               # original pixels per work pixel
        r = image_size / self.low_res_size[0]
        self._ratio = int(round(r)) if abs(r - round(r)) < 1e-9 and self.low_res_size[0] == self.low_res_size[1] else 0

    # -- work grid ------------------------------------------------------------------------------
    def box_to_work(self, box: np.ndarray) -> np.ndarray:
        """XYXY original pixels -> work-grid pixels."""
        return np.asarray(box, np.float64) * np.array([self.sx, self.sy, self.sx, self.sy])

    def box_from_work(self, box: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """XYXY work-grid pixels (``mask_to_box`` of a work mask) -> original pixels; None stays None."""
        return None if box is None else np.asarray(box, np.float64) / np.array([self.sx, self.sy, self.sx, self.sy])

    def to_work(self, mask: np.ndarray) -> np.ndarray:
        """``[H, W]`` bool mask of any size -> ``[h, w]`` bool on the work grid (nearest)."""
        if tuple(mask.shape) == self.work_size:
            return np.asarray(mask, bool)
        return cv2.resize(np.asarray(mask, np.uint8), self.work_size[::-1], interpolation=cv2.INTER_NEAREST) > 0

    def work_masks(self, logits: np.ndarray) -> list[np.ndarray]:
        """Low-res logits ``[P, h, w]`` -> ``P`` bool masks on the work grid, upsampled as the engine
        does (bilinear to the padded ``image_size`` square, cropped to the input size, bilinear to
        the target) and thresholded at 0. When the work grid is the input size only the window
        around each mask's positive cells is upsampled (exact: bilinear upsampling by an integer
        factor reads only the neighbouring cells)."""
        if self.work_size != self.input_size or not self._ratio:
            return [m for m in self._upsample(logits, self.work_size) > 0]
        r, (ih, iw) = self._ratio, self.input_size
        lh, lw = self.low_res_size
        out = []
        for lg in np.asarray(logits, np.float32):
            m = np.zeros(self.work_size, bool)
            pos = lg > 0
            rows, cols = np.flatnonzero(pos.any(1)), np.flatnonzero(pos.any(0))
            if rows.size:
                y0, y1 = max(0, rows[0] - 1), min(lh, rows[-1] + 2)   # cells whose pixels may be > 0
                x0, x1 = max(0, cols[0] - 1), min(lw, cols[-1] + 2)
                sy0, sy1, sx0, sx1 = max(0, y0 - 1), min(lh, y1 + 1), max(0, x0 - 1), min(lw, x1 + 1)  # + neighbours
                up = cv2.resize(np.ascontiguousarray(lg[sy0:sy1, sx0:sx1]), ((sx1 - sx0) * r, (sy1 - sy0) * r),
                                interpolation=cv2.INTER_LINEAR)
                up = up[(y0 - sy0) * r:(y1 - sy0) * r, (x0 - sx0) * r:(x1 - sx0) * r]
                Y0, X0 = y0 * r, x0 * r
                Y1, X1 = min(ih, y1 * r), min(iw, x1 * r)
                if Y1 > Y0 and X1 > X0:
                    m[Y0:Y1, X0:X1] = up[:Y1 - Y0, :X1 - X0] > 0
            out.append(m)
        return out

    def full_masks(self, logits: np.ndarray) -> np.ndarray:
        """Low-res logits ``[P, h, w]`` -> ``[P, H, W]`` bool masks at the original frame size
        (``SegEngine.postprocess``'s upsampling, with OpenCV)."""
        return self._upsample(logits, self.original_size) > 0

    def full_logits(self, logits: np.ndarray, size: Optional[tuple[int, int]] = None) -> np.ndarray:
        """Low-res logits ``[P, h, w]`` -> ``[P, H, W]`` float32 upsampled logits (``size``: default original)."""
        return self._upsample(logits, size or self.original_size)

    def _upsample(self, logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        s, (ih, iw), (oh, ow) = self.image_size, self.input_size, size
        logits = np.asarray(logits, np.float32)
        out = np.empty((len(logits), oh, ow), np.float32)
        for i, lg in enumerate(logits):
            x = cv2.resize(np.ascontiguousarray(lg), (s, s), interpolation=cv2.INTER_LINEAR)[:ih, :iw]
            out[i] = x if (ih, iw) == (oh, ow) else cv2.resize(x, (ow, oh), interpolation=cv2.INTER_LINEAR)
        return out

    def shift_logits(self, logits: np.ndarray, motion: Motion, box: Optional[np.ndarray] = None) -> np.ndarray:
        """Warp ``[h, w]`` logits by the motion (scale about the box centre, when given)."""
        if motion.dx == 0 and motion.dy == 0 and motion.scale == 1.0:
            return logits
        s = motion.scale
        cx = cy = 0.0
        if box is not None:
            cx, cy = (box[0] + box[2]) / 2 * self.fx, (box[1] + box[3]) / 2 * self.fy
        m = np.array([[s, 0, (1 - s) * cx + motion.dx * self.fx], [0, s, (1 - s) * cy + motion.dy * self.fy]],
                     np.float32)
        lh, lw = self.low_res_size
        return cv2.warpAffine(np.asarray(logits, np.float32), m, (lw, lh), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=LOGIT_FILL)

    def mask_to_logits(self, mask: np.ndarray, amplitude: float = 10.0) -> np.ndarray:
        """``[H, W]`` bool mask -> ``[h, w]`` float32 logits (+amplitude inside, -amplitude outside),
        usable as a prompt's ``mask_input``."""
        ih, iw = self.input_size
        lh, lw = self.low_res_size
        # the low-res grid covers the padded image_size square; the frame covers its top-left part
        th, tw = max(1, int(round(ih * lh / self.image_size))), max(1, int(round(iw * lw / self.image_size)))
        small = cv2.resize(mask.astype(np.float32), (tw, th), interpolation=cv2.INTER_AREA)
        out = np.full((lh, lw), -amplitude, np.float32)
        out[: min(th, lh), : min(tw, lw)] = (small[:lh, :lw] * 2 - 1) * amplitude
        return out

    def clip_logits(self, logits: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Set ``[h, w]`` logits outside ``box`` (XYXY, original pixels, plus one low-res cell) to
        confident background."""
        lh, lw = self.low_res_size
        x1 = max(0, int(np.floor(box[0] * self.fx)) - 1)
        y1 = max(0, int(np.floor(box[1] * self.fy)) - 1)
        x2 = min(lw, int(np.ceil(box[2] * self.fx)) + 1)
        y2 = min(lh, int(np.ceil(box[3] * self.fy)) + 1)
        out = np.full_like(logits, LOGIT_FILL)
        out[y1:y2, x1:x2] = logits[y1:y2, x1:x2]
        return out


def clip_mask(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool mask with everything outside ``box`` (XYXY pixels) cleared (a new array)."""
    h, w = mask.shape
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    out = np.zeros_like(mask)
    out[y1:y2, x1:x2] = mask[y1:y2, x1:x2]
    return out


def keep_highest(stack: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """``[n, ...]`` bool masks ``stack`` (changed in place and returned): a pixel in several masks stays
    only in the one with the highest of ``logits`` (``[n, ...]``, same shape) there."""
    win = np.where(stack, logits, -np.inf).argmax(0)
    for i in range(len(stack)):
        stack[i] &= win == i
    return stack


def shift_mask(mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``[H, W]`` bool mask translated by (round(dx), round(dy)) pixels, zero-filled."""
    h, w = mask.shape
    sx, sy = int(round(dx)), int(round(dy))
    out = np.zeros_like(mask)
    if abs(sx) >= w or abs(sy) >= h:
        return out
    out[max(0, sy):h + min(0, sy), max(0, sx):w + min(0, sx)] = mask[max(0, -sy):h - max(0, sy), max(0, -sx):w - max(0, sx)]
    return out


def color_hist(frame: np.ndarray, mask: np.ndarray) -> Optional[np.ndarray]:
    """``[24]`` float32: 8-bin histogram of each RGB channel of ``frame`` under ``mask`` (resized to
    the frame when sizes differ), each channel summing to 1; None for an empty mask."""
    m8 = mask.astype(np.uint8)
    if m8.shape != frame.shape[:2]:
        m8 = cv2.resize(m8, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
    if not m8.any():
        return None
    f = np.ascontiguousarray(frame)
    hs = [cv2.calcHist([f], [c], m8, [8], [0, 256]).ravel() for c in range(3)]
    return np.concatenate([h / max(h.sum(), 1.0) for h in hs]).astype(np.float32)


def hist_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Histogram intersection of two :func:`color_hist` results, in [0, 1]."""
    return float(np.minimum(a, b).sum() / 3.0)


COLOUR_UPDATE = 0.1  # share of a frame's colours in an object's colour model (when they match it)


def update_colour_model(model: Optional[np.ndarray], seen: np.ndarray, min_match: float,
                        rate: float = COLOUR_UPDATE) -> np.ndarray:
    """An object's colour model after a frame whose kept mask has colours ``seen``: ``seen`` itself
    for a new model (``model`` None: a seed), else ``rate`` of ``seen`` blended in -- only when
    ``seen`` already matches the model at least ``min_match`` (a mask creeping onto a neighbour or
    the background would otherwise drag the model along, and the colour tests with it)."""
    if model is None:
        return seen
    if hist_similarity(seen, model) < min_match:
        return model
    return ((1 - rate) * model + rate * seen).astype(np.float32)


APPEARANCE_LONG_SIDE = 160  # the colour search runs on the frame shrunk to this (it only places boxes)


def appearance_peaks(frame: np.ndarray, hist: np.ndarray, bw: float, bh: float, k: int,
                     min_contrast: float = 0.3, size: Optional[tuple[int, int]] = None) -> list[np.ndarray]:
    """Centres (X, Y, original pixels) of up to ``k`` places where a ``bw`` x ``bh`` (original
    pixels) window of ``frame`` holds the most pixels coloured like ``hist`` (a :func:`color_hist`
    colour model). ``size``: the original (H, W) when ``frame`` was resized (the tracker may hold
    frames at the model's input size); default the frame's own.

    Histogram back-projection against the frame's own colours: a pixel counts when its colour is
    more frequent in the object than in the whole frame (naive Bayes over the three channels'
    8-bin histograms), so background colours the object shares do not count. A place scores the
    fraction of such pixels in an object-sized window minus the fraction in the ring of half the
    window's size around it (centre-surround: a patch of background that happens to share the
    object's colours is as object-coloured around as inside, an object is not); places scoring
    below ``min_contrast`` are not returned, and each peak blanks a window of the object's size
    around it (distinct places, best first).
    """
    h, w = size or frame.shape[:2]
    f = min(1.0, APPEARANCE_LONG_SIDE / max(h, w))  # search pixels per original pixel
    small = np.ascontiguousarray(frame)
    target = (max(1, int(round(w * f))), max(1, int(round(h * f))))
    if small.shape[1::-1] != target:
        small = cv2.resize(small, target, interpolation=cv2.INTER_AREA)
    everywhere = color_hist(small, np.ones(small.shape[:2], bool))
    bins = (small // 32).astype(np.intp)
    llr = np.zeros(small.shape[:2], np.float32)
    for c in range(3):
        ratio = np.log((hist[8 * c:8 * c + 8] + 1e-3) / (everywhere[8 * c:8 * c + 8] + 1e-3)).astype(np.float32)
        llr += ratio[bins[..., c]]
    like = (llr > 0).astype(np.float32)
    kw, kh = max(1, int(bw * f)), max(1, int(bh * f))
    inner = cv2.boxFilter(like, -1, (kw, kh))
    outer = cv2.boxFilter(like, -1, (2 * kw + 1, 2 * kh + 1))  # the window and a ring of half its size
    ring = (outer * (2 * kw + 1) * (2 * kh + 1) - inner * kw * kh) / max(1, (2 * kw + 1) * (2 * kh + 1) - kw * kh)
    density = inner - ring
    rx, ry = max(1, int(bw * f / 2)), max(1, int(bh * f / 2))
    out = []
    for _ in range(k):
        y, x = np.unravel_index(int(np.argmax(density)), density.shape)
        if density[y, x] < min_contrast:
            break
        out.append(np.array([(x + 0.5) / f, (y + 0.5) / f]))
        density[max(0, y - ry):y + ry + 1, max(0, x - rx):x + rx + 1] = 0
    return out
