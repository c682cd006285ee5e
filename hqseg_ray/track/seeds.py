"""Turn a chunk's prompts and carried-in states into tracker seeds.

Prompts may be manifest ``PromptSpec`` objects, plain dicts of the manifest's prompt form
(``object_id``, ``frame``, ``points``, ``labels``, ``box``, ``mask`` = COCO RLE) or engine
:class:`~hqseg_ray.prompts.Prompt` objects (``mask_input`` = low-res logits). Frames are *video*
frame indices; coordinates are pixels of the original frame (points XY, boxes XYXY).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from hqseg_ray.masks import mask_to_box, rle_decode
from hqseg_ray.prompts import Prompt
from hqseg_ray.track.motion import LowResGeometry
from hqseg_ray.track.types import ObjectState


@dataclass
class SeedPrompt:
    """One object's prompt on one frame, normalised. ``object_id`` None = a detector box."""

    frame: int
    object_id: Optional[int]
    points: Optional[np.ndarray] = None   # [N, 2] float XY
    labels: Optional[np.ndarray] = None   # [N] int
    box: Optional[np.ndarray] = None      # [4] float XYXY
    mask_input: Optional[np.ndarray] = None  # [h, w] float32 low-res logits

    def to_prompt(self, local_frame: int) -> Prompt:
        return Prompt(frame=local_frame, points=self.points, labels=self.labels, box=self.box,
                      mask_input=self.mask_input, object_id=self.object_id)


def _get(p: Any, key: str, default=None):
    if isinstance(p, dict):
        return p.get(key, default)
    return getattr(p, key, default)


def normalize_prompts(prompts: Sequence[Any], geometry: LowResGeometry, where: str = "") -> list[SeedPrompt]:
    """Validate prompts and merge those of one object on one frame (points concatenated; box and
    mask from whichever prompt has them). A mask (COCO RLE at the original size) becomes a box
    plus low-res logits. Raises one ValueError listing every problem."""
    h, w = geometry.original_size
    errors: list[str] = []
    merged: dict[tuple, SeedPrompt] = {}
    detectors: list[SeedPrompt] = []
    for i, p in enumerate(prompts):
        frame, oid = _get(p, "frame"), _get(p, "object_id")
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
            errors.append(f"prompt {i}: frame must be an integer, got {frame!r}")
            continue
        if oid is not None and (isinstance(oid, bool) or not isinstance(oid, (int, np.integer)) or oid < 0):
            errors.append(f"prompt {i} (frame {frame}): object_id must be a non-negative integer or null, got {oid!r}")
            continue
        mask_input = _get(p, "mask_input")
        box = _get(p, "box")
        rle = _get(p, "mask")
        if rle is not None:
            try:
                m = rle_decode(rle if isinstance(rle, dict) else dict(rle))
            except Exception as exc:  # pycocotools raises bare exceptions on garbage
                errors.append(f"prompt {i} (frame {frame}): mask is not a valid COCO RLE ({exc})")
                continue
            if m.shape != (h, w):
                errors.append(f"prompt {i} (frame {frame}): mask size {list(m.shape)} differs from the frame {[h, w]}")
                continue
            mb = mask_to_box(m)
            if mb is None:
                errors.append(f"prompt {i} (frame {frame}): mask is empty")
                continue
            box = mb if box is None else box
            mask_input = geometry.mask_to_logits(m)
        try:
            pr = Prompt(frame=int(frame), points=_get(p, "points"), labels=_get(p, "labels"), box=box,
                        mask_input=mask_input)
        except ValueError as exc:
            errors.append(f"prompt {i} (frame {frame}): {exc}")
            continue
        problems = pr.problems((h, w), geometry.low_res_size)
        errors += [f"prompt {i} (frame {frame}): {q}" for q in problems if not q.startswith("frame ")]
        if problems:
            continue
        sp = SeedPrompt(int(frame), None if oid is None else int(oid),
                        None if pr.points is None else pr.points.reshape(-1, 2),
                        None if pr.labels is None else pr.labels.reshape(-1).astype(np.int64),
                        pr.box, pr.mask_input)
        if oid is None:
            if sp.box is None:
                errors.append(f"prompt {i} (frame {frame}): a prompt without object_id (detector) needs a box")
                continue
            detectors.append(sp)
            continue
        key = (sp.object_id, sp.frame)
        if key in merged:
            merged[key] = _merge(merged[key], sp)
        else:
            merged[key] = sp
    if errors:
        raise ValueError(where + (errors[0] if len(errors) == 1 else f"{len(errors)} prompt problems:\n  "
                                  + "\n  ".join(errors)))
    return sorted(merged.values(), key=lambda s: (s.frame, s.object_id)) + detectors


def _merge(a: SeedPrompt, b: SeedPrompt) -> SeedPrompt:
    points, labels = a.points, a.labels
    if b.points is not None:
        points = b.points if points is None else np.concatenate([points, b.points])
        labels = b.labels if labels is None else np.concatenate([labels, b.labels])
    return SeedPrompt(a.frame, a.object_id, points, labels, b.box if b.box is not None else a.box,
                      b.mask_input if b.mask_input is not None else a.mask_input)


def carried_states(carry_in: Optional[dict], first_frame: int, last_frame: int,
                   low_res_size: tuple[int, int], original_size: tuple[int, int], where: str = "") -> list[ObjectState]:
    """Parse ``carry_in`` (a previous chunk's ``carry_out``) into states; checks that it belongs
    before or inside this chunk and matches the model and frame size."""
    if not carry_in:
        return []
    objs = carry_in.get("objects") if isinstance(carry_in, dict) else None
    if objs is None:
        raise ValueError(f"{where}carry_in must be a previous chunk's carry_out dict with an 'objects' list")
    out = []
    for d in objs:
        st = ObjectState.from_dict(d)
        if st.frame_index > last_frame:
            raise ValueError(f"{where}carried-in state of track {st.track_id} is from frame {st.frame_index}, "
                             f"after this chunk ({first_frame}..{last_frame})")
        if tuple(st.logits.shape) != tuple(low_res_size):
            raise ValueError(f"{where}carried-in logits have shape {list(st.logits.shape)}, the model needs "
                             f"{list(low_res_size)} (different model?)")
        if tuple(st.mask.shape) != tuple(original_size):
            raise ValueError(f"{where}carried-in mask is {list(st.mask.shape)}, frames are {list(original_size)}")
        out.append(st)
    return out
