"""One propagation step of one object: build its prompt on frame t from its state at the
neighbouring frame, and update the state from the decoded mask (occlusion / re-acquisition).

Pure functions over :class:`~hqseg_ray.track.types.ObjectState`; the tracker batches the prompts
of all objects of a frame into one decode call.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from hqseg_ray.config import TrackerConfig
from hqseg_ray.masks import mask_to_box
from hqseg_ray.prompts import Prompt
from hqseg_ray.track.motion import LowResGeometry, Motion, expand_box, interior_points, move_box
from hqseg_ray.track.types import ObjectState


def propagation_prompt(state: ObjectState, motion: Motion, local_frame: int, cfg: TrackerConfig,
                       geo: LowResGeometry) -> tuple[Prompt, np.ndarray]:
    """Prompt for the frame after (or before) ``state``'s frame.

    Visible object (``state.lost == 0``): the box moved by ``motion`` and grown by
    ``box_margin``; ``num_points`` positive points from the mask's interior, moved; the logits
    warped by the motion as ``mask_input``. Occluded object: the last good box moved by its
    velocity times the lost frames and enlarged for re-acquisition, logits likewise, no points.
    ``method: naive`` uses the previous box (grown by ``box_margin``) alone.

    Returns: (prompt, predicted box ``[4]`` XYXY before the margin) -- the latter is what
    detector boxes are matched against.
    """
    size = geo.original_size
    if state.lost > 0:
        n = state.lost
        motion = Motion(float(state.velocity[0]) * n, float(state.velocity[1]) * n)
        margin = cfg.box_margin + cfg.reacquire_margin * (1 + n / 8.0)
    else:
        margin = cfg.box_margin
    if cfg.method == "naive":
        return Prompt(frame=local_frame, box=expand_box(state.box, margin, size)), state.box
    pred = move_box(state.box, motion)
    box = expand_box(pred, margin, size)
    points = labels = None
    if state.lost == 0 and cfg.num_points > 0:
        pts = interior_points(state.mask, cfg.num_points)
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


def accept(state: Optional[ObjectState], area: int, score: float, cfg: TrackerConfig) -> bool:
    """Is a propagated (or re-acquired, when ``state.lost > 0``) mask good enough to emit?"""
    if area < max(1, cfg.min_area):
        return False
    ref = float(np.median(state.areas[-cfg.area_window:])) if state is not None and state.areas else None
    if state is not None and state.lost > 0:
        lo, min_score = cfg.reacquire_min_area_ratio, cfg.reacquire_min_score
    else:
        lo, min_score = cfg.min_area_ratio, cfg.min_score
    if score < min_score:
        return False
    return ref is None or lo * ref <= area <= cfg.max_area_growth * ref


def visible_state(prev: Optional[ObjectState], template: ObjectState, frame_index: int, mask: np.ndarray,
                  logits: np.ndarray, score: float, motion: Optional[Motion], seed: bool,
                  cfg: TrackerConfig) -> ObjectState:
    """State after a good mask on ``frame_index``. ``template`` supplies ids; ``prev`` the history
    (None or ignored for seeds, which restart the area history)."""
    area = int(mask.sum())
    if seed or prev is None:
        areas, vel, dist = [area], (prev.velocity if prev is not None else np.zeros(2)), 0
    else:
        areas = (prev.areas + [area])[-cfg.area_window:]
        vel = prev.velocity
        if motion is not None and prev.lost == 0:
            vel = 0.5 * prev.velocity + 0.5 * np.array([motion.dx, motion.dy])
        dist = prev.seed_distance + 1
    return replace(template, frame_index=int(frame_index), logits=np.asarray(logits, np.float32), mask=mask,
                   box=mask_to_box(mask), areas=areas, velocity=np.asarray(vel, np.float64), lost=0,
                   score=float(score), seed_distance=dist)


def occluded_state(prev: ObjectState, frame_index: int) -> ObjectState:
    """State after a frame without a good mask: the last good mask/box/logits are kept."""
    return replace(prev, frame_index=int(frame_index), lost=prev.lost + 1, seed_distance=prev.seed_distance + 1)
