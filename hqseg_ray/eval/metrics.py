"""DAVIS-style video object segmentation metrics: J (region IoU), F (boundary F-measure), J&F,
and identity switches.

J and F follow the DAVIS evaluation code (``db_eval_iou``, ``db_eval_boundary``): F thins both
masks to one-pixel boundaries (``seg2bmap``), dilates each with a disk of radius
``ceil(0.008 * image diagonal)`` and matches boundary pixels of one against the dilated other.
Two empty masks score J = F = 1.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import cv2
import numpy as np

BOUND_TH = 0.008


def j_score(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity: IoU of two ``[H, W]`` bool masks (1.0 when both are empty)."""
    pred, gt = pred.astype(bool), gt.astype(bool)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of a ``[H, W]`` mask (DAVIS ``seg2bmap`` at the mask's own size)."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """``skimage.morphology.disk``: pixels with x^2 + y^2 <= r^2, as uint8."""
    r = int(radius)
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return (x * x + y * y <= r * r).astype(np.uint8)


def bound_pixels(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Match tolerance in pixels: ``bound_th`` itself if >= 1, else ceil(bound_th * diagonal)."""
    return int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def f_score(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure of two ``[H, W]`` masks (DAVIS ``db_eval_boundary``)."""
    fg_b = seg2bmap(pred)
    gt_b = seg2bmap(gt)
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0  # precision or recall is 0 -> F = 0, as in DAVIS
    k = disk(bound_pixels(pred.shape, bound_th))
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), k).astype(bool)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), k).astype(bool)
    precision = np.count_nonzero(fg_b & gt_dil) / n_fg
    recall = np.count_nonzero(gt_b & fg_dil) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _split_gt(gt) -> tuple[dict[int, np.ndarray], Optional[tuple[int, int]]]:
    """An id map ``[H, W]`` (0 = background) or ``{object_id: mask}`` -> (``{object_id: mask}``, shape)."""
    if isinstance(gt, Mapping):
        d = {int(k): np.asarray(v, bool) for k, v in gt.items()}
        return d, (next(iter(d.values())).shape if d else None)
    gt = np.asarray(gt)
    return {int(i): gt == i for i in np.unique(gt) if i != 0}, gt.shape


def evaluate_video(pred_masks_by_frame: Mapping[int, Mapping[int, np.ndarray]],
                   gt_by_frame: Mapping[int, object], bound_th: float = BOUND_TH,
                   exclude_first_last: bool = False, match_iou: float = 0.5,
                   objects: Optional[list[int]] = None) -> dict:
    """Score one video.

    Args:
        pred_masks_by_frame: ``{frame: {object_id: [H, W] bool}}``; a missing frame or object is an
            empty prediction.
        gt_by_frame: ``{frame: [H, W] int id map (0 = background)}`` or
            ``{frame: {object_id: [H, W] bool}}``. Its frames are the frames scored.
        bound_th: F's boundary tolerance (fraction of the diagonal, or pixels if >= 1).
        exclude_first_last: drop the first and last annotated frame (the DAVIS semi-supervised
            protocol, where frame 0 carries the given mask).
        match_iou: IoU needed for a predicted id to count as matched to a GT object (ID switches).
        objects: GT object ids to score (default: every id present in any GT frame).

    Returns:
        ``{"J", "F", "JF": means over objects, "id_switches": total, "frames": n scored,
        "per_object": {id: {"J", "F", "JF", "id_switches", "J_per_frame", "F_per_frame"}}}``.
    """
    frames = sorted(int(f) for f in gt_by_frame)
    if exclude_first_last and len(frames) > 2:
        frames = frames[1:-1]
    gts = {f: _split_gt(gt_by_frame[f]) for f in frames}
    if objects is None:
        objects = sorted({o for g, _ in gts.values() for o in g})
    per_object: dict[int, dict] = {}
    for oid in objects:
        js, fs = [], []
        switches, last = 0, None
        for f in frames:
            g, shape = gts[f]
            shape = shape or _frame_shape(pred_masks_by_frame.get(f))
            gm = g.get(oid)
            if gm is None:
                gm = np.zeros(shape, bool)
            preds = pred_masks_by_frame.get(f, {}) or {}
            pm = preds.get(oid)
            pm = np.zeros_like(gm) if pm is None else np.asarray(pm, bool)
            if pm.shape != gm.shape:
                raise ValueError(f"frame {f}, object {oid}: predicted mask is {list(pm.shape)} but the "
                                 f"ground truth is {list(gm.shape)}; predict at the annotation size")
            js.append(j_score(pm, gm))
            fs.append(f_score(pm, gm, bound_th))
            if gm.any() and preds:
                ious = {int(p): j_score(np.asarray(m, bool), gm) for p, m in preds.items()}
                best = max(ious, key=ious.get)
                if ious[best] >= match_iou:
                    if last is not None and best != last:
                        switches += 1
                    last = best
        jm = float(np.mean(js)) if js else float("nan")
        fm = float(np.mean(fs)) if fs else float("nan")
        per_object[int(oid)] = {"J": jm, "F": fm, "JF": (jm + fm) / 2, "id_switches": switches,
                                "J_per_frame": js, "F_per_frame": fs}
    if per_object:
        j = float(np.mean([o["J"] for o in per_object.values()]))
        f = float(np.mean([o["F"] for o in per_object.values()]))
    else:
        j = f = float("nan")
    return {"J": j, "F": f, "JF": (j + f) / 2, "id_switches": sum(o["id_switches"] for o in per_object.values()),
            "frames": len(frames), "per_object": per_object}


def match_objects(pred_masks_by_frame: Mapping[int, Mapping[int, np.ndarray]], gt_by_frame: Mapping[int, object],
                  bound_th: float = BOUND_TH) -> dict[int, int]:
    """One-to-one assignment of predicted ids to ground-truth ids for output without given
    identities (automatic mode), as DAVIS's unsupervised evaluation does it: the J&F of every
    (ground truth, prediction) pair over the video's ground-truth frames, then the assignment that
    maximises their sum (Hungarian, ``scipy.optimize.linear_sum_assignment``). Pairs that never
    overlap score 0 and are not assigned.

    Returns: ``{predicted id: ground-truth id}``; predictions left out are not scored.
    """
    from scipy.optimize import linear_sum_assignment

    frames = sorted(int(f) for f in gt_by_frame)
    gts = {f: _split_gt(gt_by_frame[f])[0] for f in frames}
    gt_ids = sorted({o for g in gts.values() for o in g})
    pred_ids = sorted({int(p) for f in frames for p in (pred_masks_by_frame.get(f) or {})})
    if not gt_ids or not pred_ids:
        return {}
    score = np.zeros((len(gt_ids), len(pred_ids)))
    for gi, g in enumerate(gt_ids):
        for pi, p in enumerate(pred_ids):
            pairs = [(gts[f].get(g), (pred_masks_by_frame.get(f) or {}).get(p)) for f in frames]
            if not any(gm is not None and pm is not None and np.any(gm & np.asarray(pm, bool)) for gm, pm in pairs):
                continue  # never overlap: 0, and F is not worth computing
            js, fs = [], []
            for gm, pm in pairs:
                if gm is None and pm is None:
                    js.append(1.0), fs.append(1.0)
                    continue
                shape = gm.shape if gm is not None else np.asarray(pm).shape
                gm = np.zeros(shape, bool) if gm is None else gm
                pm = np.zeros(shape, bool) if pm is None else np.asarray(pm, bool)
                js.append(j_score(pm, gm))
                fs.append(f_score(pm, gm, bound_th))
            score[gi, pi] = (np.mean(js) + np.mean(fs)) / 2
    rows, cols = linear_sum_assignment(-score)
    return {pred_ids[c]: gt_ids[r] for r, c in zip(rows, cols) if score[r, c] > 0}


def relabel(pred_masks_by_frame: Mapping[int, Mapping[int, np.ndarray]], mapping: Mapping[int, int]) -> dict:
    """Predictions with their ids replaced through ``mapping``; ids not in it dropped."""
    return {f: {mapping[int(p)]: m for p, m in (objs or {}).items() if int(p) in mapping}
            for f, objs in pred_masks_by_frame.items()}


def _frame_shape(preds) -> tuple[int, int]:
    if preds:
        return np.asarray(next(iter(preds.values()))).shape
    raise ValueError("a ground-truth frame has no objects and no prediction: its size is unknown; "
                     "pass ground truth as id maps")
