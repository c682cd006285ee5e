"""The review queue: per video, the (frame, object) pairs a person should check first.

Built from one video's masks rows (the Parquet output), so the bulk job writes it next to the masks
and ``hqseg export OUTPUT --format review`` can rebuild it for any output, old ones included.

    OUTPUT/review/<video_id>.json      one per video (schema ``hqseg.review`` version 1)
    OUTPUT/exports/review/tasks.json   ``hqseg export --format review``: every video's items, one list
    OUTPUT/exports/review/tasks.csv    the same as a flat table (one row per item)

Reasons (an item may have several; ``priority`` in [0, 1] orders the queue, highest first):

=============  ==========================================================================================
``low_score``  the mask's predicted IoU is below ``low_score`` (0.7)
``score_drop`` the score fell by at least ``score_drop`` (0.2) since the object's previous labelled frame
``area_jump``  the area grew or shrank by a factor of at least ``area_jump`` (2.0) since that frame
``reacquired`` the object is back after labelled frames where it had no mask (occluded or lost)
``lost``       the object has no mask on this labelled frame but had one on the previous labelled frame
               (``score``/``area`` are null; ``bbox_xywh`` is its last box, ``prev_frame`` where it was)
``stitched``   the object crosses a chunk boundary here (another chunk's prediction, its id carried over
               by stitching) and its box moved: box IoU with the previous labelled frame below
               ``stitch_iou`` (0.5), the place where an identity switch hides
=============  ==========================================================================================

Frames are the labelled frames only (``t % stride == 0``); with ``chunking.stride > 1`` the frames
in between were never looked at and are neither lost nor empty.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np

SCHEMA = "hqseg.review"
VERSION = 1
REASONS = ("low_score", "score_drop", "area_jump", "reacquired", "lost", "stitched")
ITEM_FIELDS = ("rank", "video_id", "frame_index", "object_id", "label", "priority", "reasons", "score",
               "prev_score", "area", "prev_area", "bbox_xywh", "prev_frame", "chunk_index", "source", "detail")


@dataclass(frozen=True)
class ReviewThresholds:
    """When a (frame, object) enters the queue (see the module docstring)."""

    low_score: float = 0.7
    score_drop: float = 0.2
    area_jump: float = 2.0
    stitch_iou: float = 0.5


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _column(table: Any, name: str, default=None) -> list:
    if isinstance(table, dict):  # {column: list}
        n = len(next(iter(table.values()))) if table else 0
        return list(table[name]) if name in table else [default] * n
    if name in table.column_names:
        return table.column(name).to_pylist()
    return [default] * table.num_rows


def build_review(table: Any, video_id: str, num_frames: int, stride: int = 1, video: Optional[str] = None,
                 thresholds: ReviewThresholds = ReviewThresholds(), max_items: Optional[int] = None) -> dict:
    """One video's review queue (the ``hqseg.review`` JSON object) from its masks rows.

    Args:
        table: a ``pyarrow.Table`` (or ``{column: list}``) with the masks columns ``frame_index, object_id, score, area,
            bbox_xywh, source, chunk_index`` and optionally ``label`` (one video's rows, any order).
            Rows with ``area`` 0 count as "no mask".
        video_id: the video's id. num_frames: frames of the video (labelled frames are
            ``0, stride, 2*stride, ... < num_frames``). video: its source URI, stored as is.
        max_items: keep only the highest-priority items (None: all).
    """
    th = thresholds
    stride = max(1, int(stride))
    fi = _column(table, "frame_index")
    by_obj: dict[int, list[int]] = {}
    area = _column(table, "area", 0)
    for i, oid in enumerate(_column(table, "object_id")):
        if area[i]:
            by_obj.setdefault(int(oid), []).append(i)
    score, bbox = _column(table, "score"), _column(table, "bbox_xywh")
    source, chunk, label = _column(table, "source"), _column(table, "chunk_index"), _column(table, "label")
    last_labelled = ((max(int(num_frames), 1) - 1) // stride) * stride
    items, objects = [], []
    for oid in sorted(by_obj):
        rows = sorted(by_obj[oid], key=lambda i: fi[i])
        lab = next((label[i] for i in rows if label[i]), None)
        scores = [float(score[i]) for i in rows if score[i] is not None]
        objects.append({"object_id": oid, "label": lab, "frames": len(rows), "first_frame": int(fi[rows[0]]),
                        "last_frame": int(fi[rows[-1]]),
                        "mean_score": round(float(np.mean(scores)), 4) if scores else None,
                        "min_score": round(float(min(scores)), 4) if scores else None})
        prev = None
        for i in rows:
            t = int(fi[i])
            reasons, sev, detail = [], [], []
            s = None if score[i] is None else round(float(score[i]), 6)  # float32 in Parquet: 0.7 stays 0.7
            if s is not None and s < th.low_score:
                reasons.append("low_score")
                sev.append(0.5 + 0.5 * (th.low_score - s) / th.low_score)
                detail.append(f"score {s:.2f} < {th.low_score:g}")
            if prev is not None:
                pt, gap = int(fi[prev]), t - int(fi[prev])
                ps = None if score[prev] is None else round(float(score[prev]), 6)
                if gap > stride:  # labelled frames in between had no mask: lost there, back here
                    items.append(_item(video_id, t=pt + stride, oid=oid, lab=lab, reasons=["lost"], sev=[0.6],
                                       prev_i=prev, fi=fi, score=score, area=area, bbox=bbox, chunk=chunk,
                                       source=source, i=None,
                                       detail=[f"no mask after frame {pt} (back on frame {t})"]))
                    reasons.append("reacquired")
                    sev.append(0.6)
                    detail.append(f"re-acquired after {gap // stride - 1} labelled frame(s) without a mask")
                else:
                    if s is not None and ps is not None and ps - s >= th.score_drop:
                        reasons.append("score_drop")
                        sev.append(min(1.0, 0.4 + (ps - s)))
                        detail.append(f"score {ps:.2f} -> {s:.2f}")
                    ratio = max(area[i], area[prev]) / max(1, min(area[i], area[prev]))
                    if ratio >= th.area_jump:
                        reasons.append("area_jump")
                        sev.append(min(1.0, 0.3 + 0.2 * math.log2(ratio)))
                        detail.append(f"area {area[prev]} -> {area[i]} px")
                if chunk[i] is not None and chunk[prev] is not None and chunk[i] != chunk[prev]:
                    iou = _box_iou(bbox[prev], bbox[i])
                    if iou < th.stitch_iou:
                        reasons.append("stitched")
                        sev.append(0.5 + (th.stitch_iou - iou))
                        detail.append(f"chunk {chunk[prev]} -> {chunk[i]}, box IoU {iou:.2f}")
            if reasons:
                items.append(_item(video_id, t=t, oid=oid, lab=lab, reasons=reasons, sev=sev, prev_i=prev, fi=fi,
                                   score=score, area=area, bbox=bbox, chunk=chunk, source=source, i=i,
                                   detail=detail))
            prev = i
        if int(fi[rows[-1]]) < last_labelled:  # gone before the end of the video
            pt = int(fi[rows[-1]])
            items.append(_item(video_id, t=pt + stride, oid=oid, lab=lab, reasons=["lost"], sev=[0.6],
                               prev_i=rows[-1], fi=fi, score=score, area=area, bbox=bbox, chunk=chunk,
                               source=source, i=None, detail=[f"no mask after frame {pt} to the end of the video"]))
    items.sort(key=lambda it: (-it["priority"], it["frame_index"], it["object_id"]))
    if max_items is not None:
        items = items[:max_items]
    for r, it in enumerate(items, 1):
        it["rank"] = r
    return {"schema": SCHEMA, "version": VERSION, "video_id": video_id, "video": video,
            "num_frames": int(num_frames), "stride": stride, "thresholds": asdict(th),
            "counts": {r: sum(r in it["reasons"] for it in items) for r in REASONS},
            "objects": objects, "items": items}


def _item(video_id, *, t, oid, lab, reasons, sev, prev_i, fi, score, area, bbox, chunk, source, i, detail) -> dict:
    sev = sorted(sev, reverse=True)
    prio = min(1.0, sev[0] + 0.1 * (len(sev) - 1))
    here = i if i is not None else prev_i  # a lost item shows the last known box
    return {
        "rank": 0, "video_id": video_id, "frame_index": int(t), "object_id": int(oid), "label": lab,
        "priority": round(float(prio), 4), "reasons": list(reasons),
        "score": None if i is None or score[i] is None else round(float(score[i]), 4),
        "prev_score": None if prev_i is None or score[prev_i] is None else round(float(score[prev_i]), 4),
        "area": None if i is None else int(area[i]),
        "prev_area": None if prev_i is None else int(area[prev_i]),
        "bbox_xywh": None if here is None else [float(v) for v in bbox[here]],
        "prev_frame": None if prev_i is None else int(fi[prev_i]),
        "chunk_index": None if i is None or chunk[i] is None else int(chunk[i]),
        "source": None if i is None else source[i],
        "detail": "; ".join(detail),
    }


def review_path(output_dir: str, video_id: str) -> str:
    """``OUTPUT/review/<video_id>.json``."""
    return os.path.join(str(output_dir), "review", f"{video_id}.json")


def write_review(output_dir: str, review: dict) -> str:
    """Write one video's queue to :func:`review_path` (atomically); returns the path."""
    from hqseg_ray.export.io import write_text

    path = review_path(output_dir, review["video_id"])
    write_text(path, json.dumps(review, separators=(",", ":")))
    return path


def load_review(output_dir: str, video_id: str, rebuild: bool = True) -> dict:
    """One video's review queue: ``OUTPUT/review/<video_id>.json``, or (``rebuild``) built from its
    masks when the file is absent (outputs of older versions, ``hqseg segment``).

    Raises:
        FileNotFoundError: no queue file and (``rebuild`` False or) no masks for ``video_id``.
        ValueError: a file of another schema or a newer version.
    """
    from hqseg_ray.storage import split_uri

    path = review_path(output_dir, video_id)
    store, name = split_uri(path)
    if store.exists(name):
        data = json.loads(store.read_bytes(name))
        check_review(data, path)
        return data
    if not rebuild:
        raise FileNotFoundError(f"no review queue {path!r}; run `hqseg export {output_dir} --format review`")
    from hqseg_ray.export.formats import list_videos, load_video

    refs, problems = list_videos(output_dir, [video_id])
    if problems:
        raise FileNotFoundError(f"review queue of video {video_id!r}: {problems[0]}")
    return load_video(refs[0]).review()


def check_review(data: Any, where: str) -> None:
    """Raise ValueError unless ``data`` is an ``hqseg.review`` object this version can read."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{where}: not an hqseg review queue (schema {SCHEMA!r} expected)")
    if int(data.get("version", 0)) > VERSION:
        raise ValueError(f"{where}: review queue version {data.get('version')} is newer than this hqseg-ray "
                         f"reads ({VERSION}); upgrade hqseg-ray")


def review_from_frames(frames: Sequence[Any], video_id: str, num_frames: int, stride: int = 1,
                       video: Optional[str] = None, labels: Optional[dict] = None,
                       default_label: Optional[str] = None, **kwargs) -> dict:
    """:func:`build_review` from ``FrameResult``-like objects (``frame_index``, ``object_ids``,
    ``rles``, ``scores``, ``sources``, ``chunk_index``/``chunk_indices``), as the bulk job holds
    them before writing; the same queue as from the Parquet rows they become."""
    from hqseg_ray.masks import rle_area, rle_bbox_xywh

    names = {int(k): v for k, v in (labels or {}).items()}
    cols: dict[str, list] = {k: [] for k in ("frame_index", "object_id", "score", "area", "bbox_xywh", "source",
                                             "chunk_index", "label")}
    for fr in frames:
        chunks = list(getattr(fr, "chunk_indices", None) or [])
        for k, oid in enumerate(fr.object_ids):
            cols["frame_index"].append(int(fr.frame_index))
            cols["object_id"].append(int(oid))
            cols["score"].append(float(fr.scores[k]))
            cols["area"].append(rle_area(fr.rles[k]))
            cols["bbox_xywh"].append(rle_bbox_xywh(fr.rles[k]))
            cols["source"].append(str(fr.sources[k]))
            cols["chunk_index"].append(int(chunks[k]) if k < len(chunks) else int(fr.chunk_index))
            cols["label"].append(names.get(int(oid), default_label))
    return build_review(cols, video_id, num_frames, stride, video=video, **kwargs)


def _writer_base():
    from hqseg_ray.export.formats import FormatWriter

    return FormatWriter


class ReviewWriter(_writer_base()):
    """``--format review``: rebuilds ``review/<video_id>.json`` per video from its masks, and writes
    the task list ``exports/review/tasks.json`` / ``tasks.csv`` (every video's first
    ``max_items_per_video`` items, highest priority first) at the end."""

    fmt = "review"

    def __init__(self, output_dir: str, max_items_per_video: int = 100, **thresholds) -> None:
        self.output_dir = output_dir
        self.folder = os.path.join(output_dir, "exports", "review")
        self.max_items = max_items_per_video
        self.thresholds = ReviewThresholds(**thresholds)
        self.items: list[dict] = []

    def add(self, vm) -> None:
        review = vm.review(thresholds=self.thresholds)
        write_review(self.output_dir, review)
        self.items.extend(review["items"][:self.max_items])

    def close(self) -> str:
        import csv
        import io

        from hqseg_ray.export.io import write_text

        items = sorted(self.items, key=lambda it: (-it["priority"], it["video_id"], it["frame_index"],
                                                   it["object_id"]))
        write_text(os.path.join(self.folder, "tasks.json"), json.dumps(items, separators=(",", ":")))
        buf = io.StringIO()
        cols = [c for c in ITEM_FIELDS if c != "bbox_xywh"] + ["x", "y", "w", "h"]
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for it in items:
            row = {k: v for k, v in it.items() if k in cols}
            row["reasons"] = "|".join(it["reasons"])
            row.update(zip("xywh", it["bbox_xywh"] or [None] * 4))
            w.writerow(row)
        write_text(os.path.join(self.folder, "tasks.csv"), buf.getvalue())
        return self.folder
