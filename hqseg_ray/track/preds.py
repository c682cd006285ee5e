"""One frame's predictions and the judgement of them, on the tracker's work grid.

``Predictions`` (like SAM's ``MaskData``) holds everything decoded for one frame in one place,
index-aligned over the flat decode (one entry per decoded prompt: a job's prompt, or each
candidate of a re-acquisition). :func:`predictions` builds it from the engine's low-res output;
:func:`judge` is the pure accept / reject step (which candidate each job keeps, which masks are
good, who gives pixels back) and returns a :class:`Verdict`; the tracker then commits the verdict
(new states, entries, the full-resolution masks of what was kept).

Grids: masks are ``[h, w]`` bool on ``geo.work_size`` (the frames as the tracker holds them, at
most 1024 on the long side); areas are in *original* pixels (``geo.px_area`` per work pixel), so
every threshold of ``TrackerConfig`` keeps its meaning; ``boxes`` are work-grid XYXY.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from hqseg_ray.masks import mask_to_box
from hqseg_ray.track.motion import (LowResGeometry, clip_mask, color_hist, expand_box, hist_similarity,
                                    keep_highest)
from hqseg_ray.track.step import accept, choose_candidates, exclusive, touching


@dataclass
class Predictions:
    """Every prediction of one frame (``P`` = decoded prompts), index-aligned.

    Attributes:
        owner: ``[P]`` index of the job each prediction belongs to.
        prompts: ``[P]`` the decoded ``Prompt``.
        raw_logits: ``[P, lh, lw]`` float32 low-res logits as decoded.
        logits: ``[P, lh, lw]`` the same, cut to the clip box (what a state keeps as mask input).
        scores: ``[P]`` float predicted IoU.
        clip_boxes: ``[P]`` XYXY original-pixel box the mask was cut to, or None.
        masks: ``[P]`` bool ``[h, w]`` work-grid masks (cut to ``clip_boxes``).
        areas: ``[P]`` int area in original pixels after the cut; ``raw_areas`` before it.
        boxes: ``[P]`` work-grid tight boxes (None for an empty mask).
        border: ``[P]`` does the mask touch the frame's edge.
    """

    owner: list[int]
    prompts: list
    raw_logits: np.ndarray
    logits: np.ndarray
    scores: np.ndarray
    clip_boxes: list
    masks: list
    areas: list[int]
    raw_areas: list[int]
    boxes: list
    border: list[bool]

    def __len__(self) -> int:
        return len(self.owner)


@dataclass
class Verdict:
    """What :func:`judge` decided for the jobs of one frame (``J`` jobs), index-aligned over jobs.

    Attributes:
        pick: ``[J]`` index into the :class:`Predictions` of the prediction each job keeps.
        masks: ``[J]`` work-grid masks after pixels were given back (carve) or shared out.
        ok: ``[J]`` the mask is good (visible); else the object is hidden / not found.
        areas: ``[J]`` original-pixel areas of ``masks``; ``boxes``: ``[J]`` original-pixel boxes.
        hists: ``[J]`` colour histograms of good masks (None otherwise).
        near: ``[J]`` touches another kept mask; ``border``: touches the frame's edge.
        writers: ``[J]`` kept before the final area check (their full-resolution masks take
            part in carving and sharing out, as the work masks did).
        carve: ``(hi, lo)`` job pairs: ``hi`` gives ``lo``'s pixels back.
        shared: overlapping pixels were shared out by the highest logit (``non_overlap``).
    """

    pick: list[int]
    masks: list
    ok: list[bool]
    areas: list[int]
    boxes: list
    hists: list
    near: list[bool]
    border: list[bool]
    writers: list[bool]
    carve: list = field(default_factory=list)
    shared: bool = False


def predictions(geo: LowResGeometry, owner: list[int], prompts: list, seed_job: list[bool], raw_logits: np.ndarray,
                scores: np.ndarray, clip_to_box: bool, box_margin: float) -> Predictions:
    """Build the :class:`Predictions` of one frame from the engine's low-res output.

    ``seed_job[p]``: prediction p answers a seed prompt, whose box is grown by ``box_margin``
    before the mask is cut to it (a propagated prompt's box already has the margin)."""
    raw_logits = np.asarray(raw_logits, np.float32)
    logits = raw_logits.copy()
    masks = geo.work_masks(raw_logits)
    raw_areas = [int(np.count_nonzero(m) * geo.px_area + 0.5) for m in masks]
    clip_boxes: list = [None] * len(prompts)
    if clip_to_box:
        for i, p in enumerate(prompts):
            if p.box is None:
                continue
            box = expand_box(p.box, box_margin, geo.original_size) if seed_job[i] else np.asarray(p.box, np.float64)
            clip_boxes[i] = box
            masks[i] = clip_mask(masks[i], geo.box_to_work(box))
            logits[i] = geo.clip_logits(logits[i], box)
    areas = [int(np.count_nonzero(m) * geo.px_area + 0.5) for m in masks]
    boxes = [mask_to_box(m) for m in masks]
    border = [b is not None and _at_border(b, geo.work_size) for b in boxes]
    return Predictions(list(owner), list(prompts), raw_logits, logits, np.asarray(scores, np.float32), clip_boxes,
                       masks, areas, raw_areas, boxes, border)


def judge(jobs: list, pr: Predictions, frame: np.ndarray, cfg, geo: LowResGeometry) -> Verdict:
    """The accept / reject step of one frame (pure: reads jobs, predictions and the frame).

    ``frame``: uint8 RGB ``[h, w, 3]`` on the work grid (colour statistics). Order of the tests:
    each prediction's own test (seed: area; propagation: :func:`~hqseg_ray.track.step.accept`);
    re-acquisition candidates ranked by colour (``reacquire_min_appearance``) and chosen
    (:func:`~hqseg_ray.track.step.choose_candidates`); the colour test of propagated masks
    (``min_appearance``); exclusivity between objects (:func:`~hqseg_ray.track.step.exclusive`),
    carving and sharing out of overlapping pixels; the final area check.
    """
    min_area = max(1, cfg.min_area)
    ok = [pr.areas[i] >= min_area if jobs[k].mode == "seed"
          else accept(jobs[k].prev, pr.areas[i], float(pr.scores[i]), cfg, pr.border[i], pr.raw_areas[i])
          for i, k in enumerate(pr.owner)]
    rank, hist_of = None, {}
    if cfg.reacquire_min_appearance > 0:  # re-acquisition: the candidate whose colours match best
        rank = [0.0] * len(pr)
        for i, k in enumerate(pr.owner):
            if jobs[k].candidates and ok[i] and jobs[k].prev.hist is not None:
                hist_of[i] = h = _hist(frame, pr.masks[i], pr.boxes[i])
                rank[i] = hist_similarity(h, jobs[k].prev.hist) if h is not None else 0.0
                ok[i] = rank[i] >= cfg.reacquire_min_appearance
    pick = choose_candidates(jobs, pr.owner, pr.masks, pr.scores, ok, cfg.max_overlap, rank)
    masks = [pr.masks[i] for i in pick]
    scores = [float(pr.scores[i]) for i in pick]
    oks = [ok[i] for i in pick]
    hists = [(hist_of[i] if i in hist_of else _hist(frame, pr.masks[i], pr.boxes[i])) if ok[i] else None
             for i in pick]
    if cfg.min_appearance > 0:
        for k, j in enumerate(jobs):
            if oks[k] and j.mode != "seed" and j.prev.hist is not None and hists[k] is not None:
                oks[k] = hist_similarity(hists[k], j.prev.hist) >= cfg.min_appearance
    carve: list = []
    areas = [pr.areas[i] for i in pick]
    wboxes = [pr.boxes[i] for i in pick]
    oks = exclusive(jobs, masks, scores, oks, cfg.max_overlap, carve, areas=areas, boxes=wboxes, geo=geo)
    writers = list(oks)
    changed = set()
    for hi, lo in carve:  # a track that bled onto a re-emerging object gives those pixels back
        masks[hi] = masks[hi] & ~masks[lo]
        changed.add(hi)
    shared = False
    if cfg.non_overlap:
        masks, moved = share_out(masks, oks, [pr.raw_logits[i] for i in pick], geo, wboxes)
        shared = bool(moved)
        changed |= moved
    for k in changed:
        areas[k] = int(np.count_nonzero(masks[k]) * geo.px_area + 0.5)
        wboxes[k] = mask_to_box(masks[k])
    # giving pixels back or to a neighbour can leave a mask (nearly) empty: then it is not seen
    oks = [o and a >= min_area for o, a in zip(oks, areas)]
    near = touching(masks, oks, boxes=wboxes)
    border = [o and b is not None and _at_border(b, geo.work_size) for o, b in zip(oks, wboxes)]
    return Verdict(pick, masks, oks, areas, [geo.box_from_work(b) for b in wboxes], hists, near, border, writers,
                   carve, shared)


def share_out(masks: list, oks: list[bool], raw_logits: list, geo: LowResGeometry, boxes: list,
              size: Optional[tuple[int, int]] = None) -> tuple[list, set]:
    """Pixels in several kept masks go to the object with the highest logit there. Returns the
    masks and the set of indices whose mask changed. Only objects whose boxes meet are upsampled."""
    vis = [k for k in range(len(masks)) if oks[k] and boxes[k] is not None]
    meet = set()
    for a in range(len(vis)):
        for b in range(a + 1, len(vis)):
            ba, bb = boxes[vis[a]], boxes[vis[b]]
            if min(ba[2], bb[2]) > max(ba[0], bb[0]) and min(ba[3], bb[3]) > max(ba[1], bb[1]) and \
                    np.logical_and(masks[vis[a]], masks[vis[b]]).any():
                meet |= {vis[a], vis[b]}
    if not meet:
        return masks, set()
    idx = sorted(meet)
    stack = np.stack([masks[k] for k in idx])
    full = geo.full_logits(np.stack([raw_logits[k] for k in idx]), size or stack.shape[1:])
    keep_highest(stack, full)
    out = list(masks)
    for i, k in enumerate(idx):
        out[k] = stack[i]
    return out, set(idx)


def _at_border(box: np.ndarray, size: tuple[int, int], margin: int = 1) -> bool:
    """A mask touches the frame's edge (within ``margin`` pixels) exactly when its tight box does."""
    h, w = size
    return bool(box[0] < margin or box[1] < margin or box[2] > w - margin or box[3] > h - margin)


def _hist(frame: np.ndarray, mask: np.ndarray, box: Optional[np.ndarray]):
    """:func:`color_hist` of the mask's box only (same histogram, fewer pixels)."""
    if box is None:
        return None
    x0, y0, x1, y1 = (int(v) for v in box)
    return color_hist(frame[y0:y1, x0:x1], mask[y0:y1, x0:x1])
