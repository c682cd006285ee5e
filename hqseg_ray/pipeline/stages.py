"""The bulk job's stages, one callable per Ray Data operator.

Each stage declares the columns it needs and fails with its name and the missing keys when they
are absent. Stages are plain Python: unit tests call them directly on a row or a batch, without
a cluster. A row that already carries an ``error`` passes through every later stage untouched,
so one bad video yields a failed status row and never stops the job.

Row shapes between stages (all columns are plain Arrow-friendly values):

* manifest row: ``video, video_id, prompts_json, auto`` (optional ``labels_json``)
* plan -> one row per chunk: ``video, video_id, chunk_index, num_chunks, start, stop, stride,
  overlap_next, prompts_json, info_json, auto, error, labels_json`` (``{"labels": {id: name},
  "default": name or null, "detections": [{frame, box, label}]}``, the video's object categories,
  resolved by stitch/write)
* decode adds ``frames`` (uint8 ``[N, h, w, 3]`` at model input size), ``frame_indices``, ``pts_times``
* segment replaces the frames by ``result`` (pickled ChunkResult: RLE only) and ``seconds``
* stitch/write emits one status row per finished video.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable, Optional

import numpy as np

from hqseg_ray.config import JobConfig

logger = logging.getLogger(__name__)

CHUNK_COLUMNS = ("video", "video_id", "chunk_index", "num_chunks", "start", "stop", "stride",
                 "overlap_next", "prompts_json", "info_json", "auto", "error", "labels_json")


def require(stage: str, row: dict, keys: Iterable[str]) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise KeyError(f"stage {stage!r}: input is missing column(s) {missing}; got {sorted(row)}")


def short_error(exc: BaseException) -> str:
    text = f"{exc.__class__.__name__}: {exc}"
    return text if len(text) < 2000 else text[:2000] + " ..."


def failed_chunk_row(row: dict, error: str) -> dict:
    """The single row a failed video carries through the remaining stages."""
    out = {k: None for k in CHUNK_COLUMNS}
    out.update(video=row.get("video"), video_id=row.get("video_id"), chunk_index=-1, num_chunks=0,
               start=0, stop=0, stride=1, overlap_next=0, prompts_json="[]", info_json="{}",
               auto=bool(row.get("auto")), error=error)
    return out


# --------------------------------------------------------------------------------------------
class PlanStage:
    """CPU task: probe the video, validate its prompts, cut it into chunks (flat_map)."""

    name = "plan"
    needs = ("video", "video_id", "prompts_json")

    def __init__(self, config: JobConfig):
        self.config = config

    def __call__(self, row: dict) -> list[dict]:
        from hqseg_ray.export.labels import detection_boxes
        from hqseg_ray.export.parquet import video_parquet_path
        from hqseg_ray.prompts import ManifestRow, validate_prompts
        from hqseg_ray.video import plan_chunks, probe_video

        require(self.name, row, self.needs)
        try:
            video_parquet_path(self.config.output.path, row["video_id"])  # a usable id, or a clear error
            labels = json.loads(row.get("labels_json") or "{}")
            manifest_row = ManifestRow.model_validate(
                {"video": row["video"], "video_id": row["video_id"], "prompts": json.loads(row["prompts_json"] or "[]"),
                 "labels": labels.get("labels"), "default_label": labels.get("default")})
            auto = bool(row.get("auto")) or self.config.input.auto or self.config.auto.enabled
            if not manifest_row.prompts and not auto:
                raise ValueError(f"video {row['video_id']!r} has no prompts and automatic mode is off "
                                 "(set input.auto: true to discover objects)")
            info = probe_video(row["video"])
            validate_prompts(manifest_row, info)
            ch = self.config.chunking
            chunks = plan_chunks(info, manifest_row.prompts, chunk_frames=ch.chunk_frames, overlap=ch.overlap,
                                 stride=ch.stride, align_to_keyframes=ch.align_to_keyframes,
                                 video_id=row["video_id"])
        except Exception as exc:  # noqa: BLE001 -- per-video failure isolation
            logger.warning("video %r failed in plan: %s", row.get("video_id"), exc)
            return [failed_chunk_row(row, f"plan: {short_error(exc)}")]
        info_json = json.dumps(info.to_dict())  # with the pts table: decode needs no second probe
        return [{
            "video": row["video"], "video_id": c.video_id, "chunk_index": c.chunk_index,
            "num_chunks": c.num_chunks, "start": c.start, "stop": c.stop, "stride": c.stride,
            "overlap_next": c.overlap_next,
            "prompts_json": json.dumps([p.model_dump(exclude_none=True) for p in c.prompts]),
            "info_json": info_json, "auto": auto, "error": "",
            "labels_json": json.dumps({"labels": manifest_row.object_labels(), "default": manifest_row.default_label,
                                       "detections": detection_boxes(manifest_row.prompts)}),
        } for c in chunks]


# --------------------------------------------------------------------------------------------
class DecodeStage:
    """CPU task: frame-exact decode of one chunk, resized to the model's input size (map)."""

    name = "decode"
    needs = ("video", "start", "stop", "stride", "info_json", "error")

    def __init__(self, config: JobConfig, input_size: int):
        self.config = config
        self.input_size = input_size

    def __call__(self, row: dict) -> dict:
        from hqseg_ray.model.engine import resize_longest_side
        from hqseg_ray.video import VideoInfo, read_frames

        require(self.name, row, self.needs)
        row = dict(row)
        empty = np.zeros((0, 1, 1, 3), dtype=np.uint8)
        if error_of(row):
            row.update(frames=empty, frame_indices=np.zeros(0, np.int64), pts_times=np.zeros(0),
                       original_size=[0, 0])
            return row
        try:
            info = VideoInfo.from_dict(json.loads(row["info_json"]))
            frames, idx, pts = read_frames(row["video"], int(row["start"]), int(row["stop"]), int(row["stride"]),
                                           info=info)
            if len(idx) == 0:
                raise ValueError(f"chunk {row['chunk_index']} of video {row['video_id']!r} decoded no frames")
            # the engine's own resize (SAM's rule), so the job's masks equal `hqseg segment`'s
            row["frames"] = np.stack([resize_longest_side(f, self.input_size) for f in frames])
            row["frame_indices"], row["pts_times"] = idx.astype(np.int64), pts.astype(np.float64)
            row["original_size"] = [int(frames.shape[1]), int(frames.shape[2])]
        except Exception as exc:  # noqa: BLE001
            logger.warning("video %r chunk %s failed in decode: %s", row.get("video_id"), row.get("chunk_index"), exc)
            row.update(frames=empty, frame_indices=np.zeros(0, np.int64), pts_times=np.zeros(0),
                       original_size=[0, 0], error=f"decode chunk {row.get('chunk_index')}: {short_error(exc)}")
        return row


def unbatch(batch: dict[str, Any]) -> list[dict]:
    """Ray Data numpy batch -> list of row dicts."""
    n = len(next(iter(batch.values()))) if batch else 0
    return [{k: (v[i] if v is not None else None) for k, v in batch.items()} for i in range(n)]


def rebatch(rows: list[dict], columns: Optional[Iterable[str]] = None) -> dict[str, list]:
    cols = list(columns) if columns is not None else (list(rows[0].keys()) if rows else [])
    return {c: [r.get(c) for r in rows] for c in cols}


def error_of(row: dict) -> str:
    """The row's error message, '' when none (Arrow/numpy may turn an all-None column into NaN)."""
    v = row.get("error")
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return as_str(v) or ""


def as_str(v: Any) -> Optional[str]:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode()
    return str(v) if not isinstance(v, str) else v
