"""What the review page reads from a bulk job's output folder: the videos, one frame's masks,
the review queue, and the corrections saved so far.

The folders are the server's ``serve.review_outputs``; a client names one by its position and a
video by its id (checked as a safe folder name), never by a path. Reads are bounded: one frame's
rows (a Parquet filter), at most ``QUEUE_LIMIT`` queue items.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Optional

from hqseg_ray.serve.errors import ClientError, NotFound

QUEUE_LIMIT = 500
ITEM_KEYS = ("frame_index", "object_id", "label", "priority", "score", "area", "bbox_xywh", "detail")


def output_dir(outputs: list[str], index: int) -> str:
    if not 0 <= index < len(outputs):
        raise NotFound(f"review output {index} is not configured: the server has {len(outputs)} "
                       "(serve.review_outputs)")
    path = outputs[index]
    return urllib.parse.urlparse(path).path if path.startswith("file://") else path


def masks_path(out: str, video_id: str) -> str:
    from hqseg_ray.export.parquet import video_parquet_path

    try:
        path = video_parquet_path(out, video_id)
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    if not os.path.exists(path):
        raise NotFound(f"video {video_id!r} has no masks in this output (not labelled, or failed)")
    return path


def video_uri(video: Optional[str]) -> Optional[str]:
    """A status row's ``video`` as a URI that POST /v1/videos takes (plain paths -> file://)."""
    if not video:
        return None
    if "://" in video:
        return video
    return "file://" + urllib.parse.quote(os.path.abspath(video))


def list_videos(out: str) -> list[dict]:
    """The status table's rows a reviewer needs, worst first (most low-confidence frames)."""
    import pyarrow.parquet as pq

    path = os.path.join(out, "videos.parquet")
    if not os.path.exists(path):
        raise NotFound("this output has no videos.parquet yet (the job has not finished once)")
    keep = ("video_id", "video", "status", "error", "frames", "objects", "low_confidence_frames", "mean_score")
    rows = [{k: r.get(k) for k in keep} for r in pq.read_table(path).to_pylist()]
    for r in rows:
        r["uri"] = video_uri(r.pop("video"))
    return sorted(rows, key=lambda r: (r["status"] != "ok", -(r["low_confidence_frames"] or 0), r["video_id"]))


def frame_count(out: str, video_id: str) -> Optional[int]:
    """The video's frame count from the status table (None when unknown)."""
    for r in list_videos(out):
        if r["video_id"] == video_id:
            return r["frames"]
    return None


def frame_masks(out: str, video_id: str, frame: int) -> dict:
    """One frame's masks, shaped as a video session's frame (``hqseg_ray.serve.sessions.frame_json``)."""
    import pyarrow.parquet as pq

    path = masks_path(out, video_id)
    columns = ["object_id", "score", "rle_counts", "rle_size", "bbox_xywh", "source", "pts_time"]
    if "label" in pq.read_schema(path).names:  # masks schema version 2
        columns.append("label")
    table = pq.read_table(path, filters=[("frame_index", "=", int(frame))], columns=columns)
    cols = table.to_pydict()
    objects = [{"object_id": int(cols["object_id"][i]), "size": list(cols["rle_size"][i]),
                "counts": cols["rle_counts"][i], "score": float(cols["score"][i]), "source": cols["source"][i],
                "bbox_xywh": [float(v) for v in cols["bbox_xywh"][i]],
                "label": cols["label"][i] if "label" in cols else None} for i in range(table.num_rows)]
    pts = cols["pts_time"][0] if table.num_rows else None
    return {"frame": int(frame), "pts_time": pts, "objects": sorted(objects, key=lambda o: o["object_id"])}


def review_queue(out: str, video_id: str) -> dict:
    """The video's review queue (``hqseg_ray.export.review.load_review``: the job's
    ``review/<video_id>.json``, or one built from the masks), items reduced to what the page shows
    (``reason``: the item's reasons joined by commas)."""
    from hqseg_ray.export.review import load_review, review_path

    masks_path(out, video_id)  # an unknown video is a 404 either way
    source = "job" if os.path.exists(review_path(out, video_id)) else "masks"
    try:
        data = load_review(out, video_id)
    except FileNotFoundError as exc:
        raise NotFound(str(exc)) from None
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    items = []
    for i in data.get("items", []):
        item = {k: i.get(k) for k in ITEM_KEYS}
        item["video_id"] = video_id
        item["reason"] = ",".join(i.get("reasons") or [])
        items.append(item)
    return {"video_id": video_id, "source": source, "items": items[:QUEUE_LIMIT], "total": len(items)}


def saved_corrections(out: str, video_id: str) -> list[dict]:
    """The corrections saved for one video so far (merged: one prompt per object and frame)."""
    from hqseg_ray.corrections import CORRECTIONS_FILE, read_corrections

    path = os.path.join(out, CORRECTIONS_FILE)
    if not os.path.exists(path):
        return []
    return [p.model_dump(exclude_none=True) for p in read_corrections(path).get(video_id, [])]
