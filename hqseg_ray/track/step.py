"""One propagation step of one object: build its prompt on frame t from its state at the
neighbouring frame, and update the state from the decoded mask (occlusion / re-acquisition);
and the choice among the predictions of one frame (re-acquisition candidates, exclusivity).

Pure functions over :class:`~hqseg_ray.track.types.ObjectState`; the tracker batches the prompts
of all objects of a frame into one decode call.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import cv2
import numpy as np

from hqseg_ray.config import TrackerConfig
from hqseg_ray.masks import mask_to_box
from hqseg_ray.prompts import Prompt
from hqseg_ray.track.motion import (LowResGeometry, Motion, appearance_peaks, expand_box, interior_points, move_box,
                                   shift_mask)
from hqseg_ray.track.types import ObjectState

MAX_EXTRAPOLATION = 24  # frames of constant-velocity motion a hidden object may have gone on for
MAX_SEARCH_GROW = 0.5  # a candidate box is at most twice the object: larger ones get the occluder segmented


def propagation_prompt(state: ObjectState, motion: Motion, local_frame: int, cfg: TrackerConfig,
                       geo: LowResGeometry) -> tuple[Prompt, np.ndarray]:
    """Prompt for the frame after (or before) ``state``'s frame.

    For a visible object (``state.lost == 0``; hidden ones use :func:`reacquire_prompts`): the box
    moved by ``motion`` and grown by ``box_margin``; ``num_points`` positive points from the mask's
    interior, moved; the logits warped by the motion as ``mask_input``. ``method: naive`` uses the
    previous box (grown by ``box_margin``) alone.

    Returns: (prompt, predicted box ``[4]`` XYXY before the margin) -- the latter is what
    detector boxes are matched against.
    """
    size = geo.original_size
    if cfg.method == "naive":
        return Prompt(frame=local_frame, box=expand_box(state.box, cfg.box_margin, size)), state.box
    pred = pin_to_edges(move_box(state.box, motion), state.box, size)
    box = expand_box(pred, cfg.box_margin, size)
    points = labels = None
    if state.lost == 0 and cfg.num_points > 0:
        pts = interior_points(state.mask, cfg.num_points)
        if len(pts) and tuple(state.mask.shape) != tuple(size):  # a work-grid mask: to original pixels
            pts = pts * np.array([size[1] / state.mask.shape[1], size[0] / state.mask.shape[0]])
        if len(pts):
            pts = pts + np.array([motion.dx, motion.dy])
            pts[:, 0] = np.clip(pts[:, 0], box[0], box[2])
            pts[:, 1] = np.clip(pts[:, 1], box[1], box[3])
            pts[:, 0] = np.clip(pts[:, 0], 0, size[1] - 1e-3)
            pts[:, 1] = np.clip(pts[:, 1], 0, size[0] - 1e-3)
            if len(pts) < cfg.num_points:  # keep one prompt structure for the whole frame's batch
                pts = np.concatenate([pts, np.repeat(pts[:1], cfg.num_points - len(pts), 0)])
            points, labels = pts, np.ones(len(pts), np.int64)
    mask_input = geo.shift_logits(state.logits, motion, state.box) if cfg.use_mask_input else None
    return Prompt(frame=local_frame, points=points, labels=labels, box=box, mask_input=mask_input), pred


def pin_to_edges(moved: np.ndarray, box: np.ndarray, size: tuple[int, int], tol: float = 1.0) -> np.ndarray:
    """``moved`` (``box`` after the motion) with every side that ``box`` had on the frame's edge
    kept on that edge: a mask cut by the frame edge is the visible part of an object that goes on
    beyond it, so moving that side inwards would cut off the part still coming into view."""
    h, w = size
    out = np.asarray(moved, np.float64).copy()
    for i, limit in ((0, 0.0), (1, 0.0), (2, float(w)), (3, float(h))):
        if abs(box[i] - limit) <= tol:
            out[i] = min(out[i], limit) if i < 2 else max(out[i], limit)  # low sides at 0, high at w / h
    return out


def reacquire_prompts(state: ObjectState, local_frame: int, cfg: TrackerConfig,
                      geo: LowResGeometry, frame: Optional[np.ndarray] = None) -> tuple[list[Prompt], np.ndarray]:
    """Candidate prompts for a hidden object (``state.lost > 0``).

    Boxes of the whole object's size (``state.full_box``: its last box before an occluder or the
    frame edge began to cut it), grown by ``box_margin + reacquire_margin`` (a little more the
    longer it is lost, as it may have changed size), centred where its last velocity carries that
    box (0, 1/2, 3/4, 1, 5/4, 3/2 and 2 times the extrapolated shift: it may have stopped, slowed
    or gone on; at 3/4, 1 and 5/4 also half a size to either side of the path) or, for a (nearly)
    still object, one size around it; from the second lost frame on, also along the frame edge it
    left through (:func:`edge_boxes`: whole-object boxes, and shallow ones for an object only partly
    back in view); and, given ``frame`` (RGB, original size or resized) and a colour model, at the
    ``reacquire_appearance_candidates`` places of the frame coloured most like the object
    (:func:`~hqseg_ray.track.motion.appearance_peaks`), wherever they are: an object lost in
    mid-frame, or one coming back away from where it left. Each has the last good logits moved
    there as mask input.
    Tight boxes, because a box prompt asks the model for an object that fills it: a box much
    larger than the object gets the occluder or the background segmented. The tracker keeps the
    acceptable candidate whose colours match the object best (``reacquire_min_appearance``),
    else the best-scoring one. ``method: naive`` re-prompts the last box only.

    Returns: (candidates, predicted box at the extrapolated position).
    """
    n = state.lost
    h, w = geo.original_size
    v = np.asarray(state.velocity, np.float64)
    if cfg.method == "naive":
        grow = cfg.box_margin + cfg.reacquire_margin
        return [Prompt(frame=local_frame, box=expand_box(state.box, grow, (h, w)))], state.box
    full = np.asarray(state.full_box if state.full_box is not None else state.box, np.float64)
    k = min(max(state.since_full, n), MAX_EXTRAPOLATION)
    grow = min(MAX_SEARCH_GROW, cfg.box_margin + cfg.reacquire_margin * (1 + n / 16.0))
    side = max(float(np.sqrt(np.median(state.areas))) if state.areas else 0.0, 4.0)
    bw = max(full[2] - full[0], side) * (1 + 2 * grow)
    bh = max(full[3] - full[1], side) * (1 + 2 * grow)
    c0 = (full[:2] + full[2:]) / 2
    path = v * k
    dist = float(np.hypot(*path))
    shifts = [path * f for f in (1.0, 0.75, 1.25, 0.5, 1.5, 0.0, 2.0)]
    if dist < side:  # (nearly) still: search around instead of along a path
        shifts += [np.array(d, np.float64) * side for d in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    else:  # and half a size to either side of the path, where a small error in direction leads
        across = np.array([-path[1], path[0]]) / dist * 0.5 * side
        shifts += [path * f + sgn * across for f in (1.0, 0.75, 1.25) for sgn in (1, -1)]
    # (centre, box, shift of the last logits or None: the path's shift relative to full_box)
    cands = [(c0 + d, _box_at(c0 + d, bw, bh), None) for d in shifts]
    if n >= 2:  # it left through a frame edge: it may come back anywhere near where it left
        cands += [(c, b, None) for c, b in edge_boxes(state.box, bw, bh, (h, w), n)]
    if frame is not None and state.hist is not None and cfg.reacquire_appearance_candidates > 0:
        ow, oh = max(full[2] - full[0], side), max(full[3] - full[1], side)
        g0 = 1 + 2 * min(MAX_SEARCH_GROW, cfg.box_margin + cfg.reacquire_margin)
        here = (state.box[:2] + state.box[2:]) / 2  # where the last logits are
        cands += [(c, _box_at(c, ow * g0, oh * g0), c - here)
                  for c in appearance_peaks(frame, state.hist, ow, oh, cfg.reacquire_appearance_candidates,
                                            size=geo.original_size)]
    out, seen = [], set()
    for c, box, shift in cands:
        d = c - c0
        box[[0, 2]] = np.clip(box[[0, 2]], 0, w)
        box[[1, 3]] = np.clip(box[[1, 3]], 0, h)
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            continue  # this candidate lies outside the frame
        key = tuple(np.round(box / 2).astype(int))
        if key in seen:
            continue
        seen.add(key)
        # the last good logits were seen (since_full - lost) frames after full_box
        dd = d - v * max(0, state.since_full - n) if shift is None else shift
        mi = geo.shift_logits(state.logits, Motion(float(dd[0]), float(dd[1])), state.box) if cfg.use_mask_input else None
        out.append(Prompt(frame=local_frame, box=box, mask_input=mi))
    if not out:  # every candidate off-frame: the edge nearest to where it left
        out.append(Prompt(frame=local_frame, box=expand_box(state.box, grow, (h, w))))
    return out, move_box(full, Motion(float(v[0]) * k, float(v[1]) * k))


def _box_at(c: np.ndarray, bw: float, bh: float) -> np.ndarray:
    return np.array([c[0] - bw / 2, c[1] - bh / 2, c[0] + bw / 2, c[1] + bh / 2])


def _edge_slots(box: np.ndarray, bw: float, bh: float, size: tuple[int, int], lost: int) -> list:
    """(axis, sign, centre) of :func:`edge_centres`: the edge is across ``axis`` (0: x, 1: y), on
    the low (-1: left / top) or high (+1: right / bottom) side."""
    h, w = size
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    spread = 1 + lost / 12.0
    out = []
    for axis, sign, touches, fixed in ((0, -1, x1 <= 2, bw / 2), (0, 1, x2 >= w - 2, w - bw / 2),
                                       (1, -1, y1 <= 2, bh / 2), (1, 1, y2 >= h - 2, h - bh / 2)):
        if not touches:
            continue
        step = 0.75 * (bh if axis == 0 else bw) * spread
        for j in (0, 1, -1, 2, -2, 3, -3, 4, -4):
            if axis == 0:  # a left / right edge: along y
                out.append((axis, sign, np.array([fixed, float(np.clip(cy + j * step, bh / 2, h - bh / 2))])))
            else:
                out.append((axis, sign, np.array([float(np.clip(cx + j * step, bw / 2, w - bw / 2)), fixed])))
    return out


def edge_centres(box: np.ndarray, bw: float, bh: float, size: tuple[int, int], lost: int) -> list[np.ndarray]:
    """Centres of ``bw`` x ``bh`` candidate boxes lying inside the frame along each edge that
    ``box`` touches (within 2 pixels): where it left and 1-4 steps of 3/4 of its size to either
    side, the steps widening the longer the object has been gone."""
    return [c for _, _, c in _edge_slots(box, bw, bh, size, lost)]


EDGE_DEPTHS = (1.0, 0.4)  # whole object in view, or the first part of it coming back in


def edge_boxes(box: np.ndarray, bw: float, bh: float, size: tuple[int, int], lost: int,
               depths=EDGE_DEPTHS) -> list[tuple[np.ndarray, np.ndarray]]:
    """(object centre, box) re-entry candidates at the :func:`edge_centres`: for each, a box
    reaching ``depth`` x the object's size into the frame from the edge, for each of ``depths``,
    and the centre the whole object has then (outside the box when only part of it is in view: the
    last good logits are moved there as mask input). An object
    coming back shows only a strip of itself at first, and a whole-object box around a strip gets
    the background segmented (a box prompt asks for an object that fills it)."""
    out = []
    for axis, sign, c in _edge_slots(box, bw, bh, size, lost):
        extent = (bw, bh)[axis]
        for d in depths:
            b = _box_at(c, bw, bh)
            if sign < 0:  # keep the side on the edge, pull the inner side in
                b[axis + 2] = b[axis] + d * extent
            else:
                b[axis] = b[axis + 2] - d * extent
            o = c.copy()  # where the whole object's centre is when d of it is in view
            o[axis] += sign * (1 - d) * extent
            out.append((o, b))
    return out


def touching(masks: list[np.ndarray], oks: list[bool], gap: int = 2, boxes: Optional[list] = None) -> list[bool]:
    """For each kept mask of one frame: does it come within ``gap`` pixels of another kept mask?
    ``boxes``: the masks' tight boxes when the caller has them."""
    boxes = [(mask_to_box(m) if boxes is None else boxes[k]) if ok else None
             for k, (m, ok) in enumerate(zip(masks, oks))]
    out = [False] * len(masks)
    for a in range(len(masks)):
        for b in range(a + 1, len(masks)):
            ba, bb = boxes[a], boxes[b]
            if ba is None or bb is None or ba[0] > bb[2] + gap or bb[0] > ba[2] + gap or ba[1] > bb[3] + gap \
                    or bb[1] > ba[3] + gap:
                continue
            x1, y1 = int(max(0, min(ba[0], bb[0]) - gap)), int(max(0, min(ba[1], bb[1]) - gap))
            x2, y2 = int(max(ba[2], bb[2]) + gap), int(max(ba[3], bb[3]) + gap)
            ma = masks[a][y1:y2, x1:x2].astype(np.uint8)
            grown = cv2.dilate(ma, np.ones((2 * gap + 1, 2 * gap + 1), np.uint8)) > 0
            if (grown & masks[b][y1:y2, x1:x2]).any():
                out[a] = out[b] = True
    return out


def accept(state: Optional[ObjectState], area: int, score: float, cfg: TrackerConfig,
           at_border: bool = False, raw_area: Optional[int] = None) -> bool:
    """Is a propagated (or re-acquired, when ``state.lost > 0``) mask good enough to emit?

    ``at_border``: the mask touches the frame's edge, so a shrinking area is explained by the
    object leaving the view and the lower area bound is not applied. ``raw_area``: the area
    before the mask was cut to its box, checked against the growth bound.
    """
    if area < max(1, cfg.min_area):
        return False
    ref = float(np.median(state.areas[-cfg.area_window:])) if state is not None and state.areas else None
    ref_score = float(np.median(state.scores[-cfg.area_window:])) if state is not None and state.scores else 1.0
    if state is not None and state.lost > 0:
        lo = cfg.reacquire_min_area_ratio
        min_score = min(cfg.reacquire_min_score, cfg.reacquire_score_ratio * ref_score)
    else:
        lo, min_score = cfg.min_area_ratio, min(cfg.min_score, cfg.min_score_ratio * ref_score)
    if score < min_score:
        return False
    if ref is None:
        return True
    return (at_border or lo * ref <= area) and max(area, raw_area or 0) <= cfg.max_area_growth * ref


def visible_state(prev: Optional[ObjectState], template: ObjectState, frame_index: int, mask: np.ndarray,
                  logits: np.ndarray, score: float, motion: Optional[Motion], seed: bool,
                  cfg: TrackerConfig, contact: bool = False, at_border: bool = False,
                  area: Optional[int] = None, box: Optional[np.ndarray] = None) -> ObjectState:
    """State after a good mask on ``frame_index``. ``template`` supplies ids; ``prev`` the history
    (None or ignored for seeds, which restart the area history). ``contact``: the mask touches
    another object's on this frame, so its box and flow points may mix in the other object (one
    about to pass in front of it, typically): the frame does not update the velocity or the whole-
    object box. ``at_border``: the mask touches the frame's edge, so its area is that of the part in
    view: once the object has been seen whole such areas stay out of the area history, which is the
    reference of the occlusion and growth tests (an object leaving and coming back through the edge
    is judged against its whole size, not against the sliver it was when it left). ``area`` (original
    pixels) and ``box`` (XYXY, original pixels): the mask's, when it is not at the original size."""
    area = int(np.count_nonzero(mask)) if area is None else int(area)
    box = mask_to_box(mask) if box is None else np.asarray(box, np.float64)
    if seed or prev is None:
        areas, vel, dist, scores = [area], (prev.velocity if prev is not None else np.zeros(2)), 0, [float(score)]
        full_box, since_full, steps, cut = box, 0, [], at_border
    else:
        ref = float(np.median(prev.areas[-cfg.area_window:])) if prev.areas else 0.0
        if at_border and prev.areas and not prev.areas_cut:  # the part in view: not the object's size
            areas, cut = list(prev.areas), False
        elif not at_border and prev.areas_cut:  # first whole view: it replaces the edge-cut history
            areas, cut = [area], False
        else:
            areas, cut = (prev.areas + [area])[-cfg.area_window:], at_border
        scores = (list(prev.scores) + [float(score)])[-cfg.area_window:]
        vel = prev.velocity
        full_box, since_full, steps = prev.full_box, prev.since_full + 1, list(prev.steps)
        if prev.lost == 0 and area >= 0.7 * ref and not contact:  # observed motion, unless it is being cut off
            # this frame's motion: the optical flow of the object's own points where it found
            # some (a mask that also covers a still neighbour moves its box centre at a fraction
            # of the object's speed), else the box centre's step; the velocity is the median of
            # the recent ones (one bad flow estimate, e.g. on points of an occluder, does not
            # stop a hidden object's extrapolated path)
            if motion is not None and motion.points > 0:
                step = np.array([motion.dx, motion.dy], np.float64)
            else:
                step = (box[:2] + box[2:]) / 2 - (prev.box[:2] + prev.box[2:]) / 2
            steps = (list(prev.steps) + [step])[-cfg.area_window:]
            vel = np.median(np.asarray(steps, np.float64), axis=0)
            full_box, since_full = box, 0
        dist = prev.seed_distance + 1
    return replace(template, frame_index=int(frame_index), logits=np.asarray(logits, np.float32), mask=mask,
                   box=box, areas=areas, velocity=np.asarray(vel, np.float64), lost=0,
                   score=float(score), seed_distance=dist, scores=scores, full_box=full_box, since_full=since_full,
                   steps=steps, areas_cut=cut)


def occluded_state(prev: ObjectState, frame_index: int) -> ObjectState:
    """State after a frame without a good mask: the last good mask/box/logits are kept."""
    return replace(prev, frame_index=int(frame_index), lost=prev.lost + 1, seed_distance=prev.seed_distance + 1,
                   since_full=prev.since_full + 1)


def exclusive(jobs: list, masks: list[np.ndarray], scores, oks: list[bool], max_overlap: float,
              carve: Optional[list] = None, areas: Optional[list] = None, boxes: Optional[list] = None,
              geo=None) -> list[bool]:
    """Keep two objects of one frame from claiming the same pixels.

    A re-acquired mask loses when more than ``max_overlap`` of its pixels lie inside the mask of a
    seed or a visible track -- unless that track's mask *grew* by the overlap (its area is at
    least its recent median plus half the overlap, and still at least 85 % of that median without
    it): then the track bled onto the object coming back (a neighbour's mask swallowing an object
    that re-emerges next to it), the re-acquisition is kept and ``(track, re-acquired)`` is
    appended to ``carve`` so that the caller removes the re-acquired pixels from the track's mask. Two masks of which neither is a re-acquisition conflict when their
    IoU exceeds ``max_overlap`` (an object inside another's hole, or in front of it, is
    legitimately contained in that mask): a seed wins; between two propagated tracks the one
    that jumped loses -- its new mask overlaps the other's previous mask (moved by that object's
    motion) more than its own -- else the one less consistent with its previous mask, else the
    lower predicted IoU.

    Masks may be on a smaller grid than the original frame (the tracker's work grid): ``geo``
    (a ``LowResGeometry``) then converts motions to that grid and pixel counts to original pixels,
    ``areas`` are the masks' areas in original pixels and ``boxes`` their tight boxes on the grid.
    """
    n = len(jobs)
    sx, sy, px = (geo.sx, geo.sy, geo.px_area) if geo is not None else (1.0, 1.0, 1.0)
    prop = [j.mode != "seed" and j.prev.lost == 0 and oks[k] for k, j in enumerate(jobs)]
    prev = [shift_mask(j.prev.mask, (j.motion or Motion()).dx * sx, (j.motion or Motion()).dy * sy) if prop[k]
            else None for k, j in enumerate(jobs)]
    klass = [2 if j.mode == "seed" else (1 if j.prev.lost == 0 else 0) for j in jobs]
    areas = [int(np.count_nonzero(m)) for m in masks] if areas is None else list(areas)
    boxes = [(mask_to_box(m) if boxes is None else boxes[k]) if ok else None
             for k, (m, ok) in enumerate(zip(masks, oks))]

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        u = np.logical_or(a, b).sum()
        return float(np.logical_and(a, b).sum()) / u if u else 0.0

    out = list(oks)
    for a in range(n):
        for b in range(a + 1, n):
            if not (out[a] and out[b]) or boxes[a] is None or boxes[b] is None:
                continue
            if min(boxes[a][2], boxes[b][2]) <= max(boxes[a][0], boxes[b][0]) or \
                    min(boxes[a][3], boxes[b][3]) <= max(boxes[a][1], boxes[b][1]):
                continue
            inter = int(np.count_nonzero(np.logical_and(masks[a], masks[b])) * px + 0.5)
            if klass[a] == 0 or klass[b] == 0:  # a re-acquisition landing on another object
                lo = a if klass[a] < klass[b] or (klass[a] == klass[b] and scores[a] < scores[b]) else b
                if inter > max_overlap * areas[lo]:
                    hi = b if lo == a else a
                    if carve is not None and klass[hi] == 1 and _bled(jobs[hi].prev, areas[hi], inter):
                        carve.append((hi, lo))
                    else:
                        out[lo] = False
                continue
            if inter <= max_overlap * (areas[a] + areas[b] - inter):
                continue
            if klass[a] != klass[b]:
                out[a if klass[a] < klass[b] else b] = False
                continue
            if klass[a] == 2:
                continue  # two prompts on the same pixels: the user said so
            jump_a = iou(masks[a], prev[b]) > iou(masks[a], prev[a])
            jump_b = iou(masks[b], prev[a]) > iou(masks[b], prev[b])
            if jump_a != jump_b:
                out[a if jump_a else b] = False
            else:
                ka = (iou(masks[a], prev[a]), float(scores[a]))
                kb = (iou(masks[b], prev[b]), float(scores[b]))
                out[a if ka < kb else b] = False
    return out


def _bled(prev: ObjectState, area: int, inter: int) -> bool:
    """Did a propagated track's mask grow by (about) ``inter`` pixels it did not have before?"""
    if not prev.areas:  # visible_state keeps only the last area_window areas
        return False
    ref = float(np.median(prev.areas))
    return area >= ref + 0.5 * inter and area - inter >= 0.85 * ref


def choose_candidates(jobs: list, owner: list[int], masks: list[np.ndarray], scores, oks: list[bool],
                      max_overlap: float, rank=None) -> list[int]:
    """Index (into the flat decode) of the prediction each job keeps: its only one, or for a
    re-acquisition the best acceptable candidate (highest ``rank``, default the scores) that is
    not mostly another object's (non-re-acquisition) mask on this frame."""
    rank = scores if rank is None else rank
    firm = [i for i, k in enumerate(owner) if not jobs[k].candidates and oks[i]]
    pick: list[Optional[int]] = [None] * len(jobs)
    for i, k in enumerate(owner):
        if not jobs[k].candidates:
            pick[k] = i
    for k, job in enumerate(jobs):
        if not job.candidates:
            continue
        idx = sorted((i for i, o in enumerate(owner) if o == k), key=lambda i: (-float(rank[i]), -float(scores[i])))
        pick[k] = idx[0]
        for i in idx:
            area = np.count_nonzero(masks[i])
            if oks[i] and all(np.count_nonzero(np.logical_and(masks[i], masks[f])) <= max_overlap * area
                              for f in firm):
                pick[k] = i
                break
    return pick

