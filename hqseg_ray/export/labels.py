"""Which category each output object has: explicit labels, then labels of detector boxes.

A prompt with an ``object_id`` names its object's label directly. A detector box (no
``object_id``) joins whichever track the tracker matches it to, so its label is resolved after
tracking: on the box's frame, the object whose mask box overlaps the detector box most (box IoU at
least ``min_iou``) takes the label. An object several detector boxes point to takes the label most
of them give (ties: the earliest frame's); an explicit label always wins over detector labels.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping, Optional, Sequence


def _iou_xyxy_xywh(box: Sequence[float], bb: Sequence[float]) -> float:
    x1, y1, x2, y2 = (float(v) for v in box)
    bx, by, bw, bh = (float(v) for v in bb)
    iw = max(0.0, min(x2, bx + bw) - max(x1, bx))
    ih = max(0.0, min(y2, by + bh) - max(y1, by))
    inter = iw * ih
    union = (x2 - x1) * (y2 - y1) + bw * bh - inter
    return inter / union if union > 0 else 0.0


def detection_boxes(prompts: Iterable[Any]) -> list[dict]:
    """``[{"frame", "box", "label"}]`` of the labelled prompts without an ``object_id``."""
    return [{"frame": int(p.frame), "box": [float(v) for v in p.box], "label": p.label}
            for p in prompts if p.object_id is None and p.label and p.box is not None]


def resolve_labels(frames: Iterable[Any], explicit: Optional[Mapping] = None,
                   detections: Sequence[dict] = (), min_iou: float = 0.3) -> dict[int, str]:
    """``{object_id: label}`` for a video's ``FrameResult``-like frames (``frame_index``,
    ``object_ids``, ``rles``): ``explicit`` labels plus those of ``detections`` (see the module
    docstring). Frames are only read when there are detections."""
    out = {int(k): v for k, v in (explicit or {}).items() if v}
    if not detections:
        return out
    from hqseg_ray.masks import rle_bbox_xywh

    by_frame: dict[int, list[dict]] = {}
    for d in detections:
        by_frame.setdefault(int(d["frame"]), []).append(d)
    votes: dict[int, Counter] = {}
    first: dict[tuple[int, str], int] = {}
    for fr in frames:
        dets = by_frame.get(int(fr.frame_index))
        if not dets:
            continue
        boxes = [rle_bbox_xywh(r) for r in fr.rles]
        for d in dets:
            scored = [(_iou_xyxy_xywh(d["box"], b), int(o)) for b, o in zip(boxes, fr.object_ids)]
            iou, oid = max(scored, default=(0.0, -1))
            if iou >= min_iou:
                votes.setdefault(oid, Counter())[d["label"]] += 1
                first.setdefault((oid, d["label"]), int(fr.frame_index))
    for oid, counter in votes.items():
        if oid not in out:
            out[oid] = min(counter, key=lambda lab: (-counter[lab], first[(oid, lab)]))
    return out
