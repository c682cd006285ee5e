"""The bulk job's stages, one callable per Ray Data operator.

Each stage declares the columns it needs and fails with its name and the missing keys when they
are absent. Stages are plain Python: unit tests call them directly on a row or a batch, without
a cluster. A row that already carries an ``error`` passes through every later stage untouched,
so one bad video yields a failed status row and never stops the job.

Row shapes between stages (all columns are plain Arrow-friendly values):

* manifest row: ``video, video_id, prompts_json, auto`` (optional ``labels_json``)
* plan -> one row per chunk: ``video, video_id, chunk_index, num_chunks, start, stop, stride,
  overlap_next, prompts_json, info_json, auto, error, labels_json, reserved_ids_json, table_json``
  (``labels_json``: ``{"labels": {id: name}, "default": name or null, "detections": [{frame, box,
  label}]}``, the video's object categories, resolved by stitch/write; ``info_json``: the video's
  probe without its per-frame tables; ``table_json``: only this chunk's slice of them, see
  :func:`chunk_table`; ``reserved_ids_json``: the object ids of all of the video's prompts, for the
  writer's stitcher)
* decode adds ``frames`` (uint8 ``[N, h, w, 3]`` at model input size, each frame resized as it is
  decoded), ``frame_indices``, ``pts_times``
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
                 "overlap_next", "prompts_json", "info_json", "auto", "error", "labels_json", "reserved_ids_json",
                 "table_json")


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
               auto=bool(row.get("auto")), error=error, reserved_ids_json="[]", table_json="{}")
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
        from hqseg_ray.track.driver import reserved_ids

        info_json = json.dumps(info.to_dict(tables=False))
        reserved = json.dumps(reserved_ids(manifest_row.prompts))
        return [{
            "video": row["video"], "video_id": c.video_id, "chunk_index": c.chunk_index,
            "num_chunks": c.num_chunks, "start": c.start, "stop": c.stop, "stride": c.stride,
            "overlap_next": c.overlap_next,
            "prompts_json": json.dumps([p.model_dump(exclude_none=True) for p in c.prompts]),
            "info_json": info_json, "auto": auto, "error": "", "reserved_ids_json": reserved,
            "labels_json": json.dumps({"labels": manifest_row.object_labels(), "default": manifest_row.default_label,
                                       "detections": detection_boxes(manifest_row.prompts)}),
            # decode needs no second probe, and a row of a long video carries only its own slice
            "table_json": json.dumps(chunk_table(info, c.start, c.stop)),
        } for c in chunks]


def chunk_table(info, start: int, stop: int) -> dict:
    """The slice of a video's per-frame tables (pts, keyframes, frame files) that decoding frames
    ``[start, stop)`` needs: from the keyframe before the one at or before ``start`` (one step back
    for a seek that lands late) to ``stop`` and one frame past it (so the decoder knows where to
    stop). ``offset`` is the video frame index of entry 0."""
    import bisect

    if info.kind == "video" and info.pts is None:  # no pts: decoded from the start, numbered in order
        return {"offset": 0, "pts": None, "keyframes": list(info.keyframes), "frame_files": None}
    kf = info.keyframes or [0]
    k = bisect.bisect_right(kf, start) - 1
    lo = kf[max(0, k - 1)] if k >= 0 else 0
    sl = lambda xs: None if xs is None else list(xs[lo:stop + 1])  # noqa: E731
    return {"offset": lo, "pts": sl(info.pts), "frame_files": sl(info.frame_files),
            "keyframes": [f - lo for f in kf if lo <= f < stop]}


def chunk_info(info_json: str, table_json: str):
    """``(VideoInfo of frames [offset, ...), offset)`` from a plan row: frame ``i`` of the slice
    is video frame ``offset + i``."""
    from hqseg_ray.video import VideoInfo

    d, t = json.loads(info_json), json.loads(table_json or "{}")
    if "offset" not in t:  # a whole-video info (older rows, tests)
        return VideoInfo.from_dict(d), 0
    off = int(t["offset"])
    n = len(t["pts"]) if t.get("pts") is not None else (len(t["frame_files"]) if t.get("frame_files") else None)
    d.update(pts=t.get("pts"), keyframes=t.get("keyframes") or [], frame_files=t.get("frame_files"))
    if n is not None:
        d["num_frames"] = n
        if t.get("pts") is None:  # folders / images: times count from the slice's first frame
            d["start_time"] = float(d.get("start_time") or 0.0) + off / float(d["fps"])
    else:
        off = 0
    return VideoInfo.from_dict(d), off


# --------------------------------------------------------------------------------------------
class DecodeStage:
    """CPU task: frame-exact decode of one chunk, each frame resized to the model's input size as
    it is decoded (the engine's own resize, so the job's masks equal ``hqseg segment``'s) (map)."""

    name = "decode"
    needs = ("video", "start", "stop", "stride", "info_json", "error")

    def __init__(self, config: JobConfig, input_size: int):
        self.config = config
        self.input_size = input_size

    def __call__(self, row: dict) -> dict:
        from hqseg_ray.track.driver import decode_chunk, model_size

        require(self.name, row, self.needs)
        row = dict(row)
        empty = np.zeros((0, 1, 1, 3), dtype=np.uint8)
        if error_of(row):
            row.update(frames=empty, frame_indices=np.zeros(0, np.int64), pts_times=np.zeros(0),
                       original_size=[0, 0])
            return row
        try:
            info, off = chunk_info(row["info_json"], row.get("table_json"))
            original = (int(info.height), int(info.width))
            frames, idx, pts = decode_chunk(row["video"], int(row["start"]) - off, int(row["stop"]) - off,
                                            int(row["stride"]), info, model_size(original, self.input_size))
            row["frames"], row["frame_indices"], row["pts_times"] = frames, (idx + off).astype(np.int64), pts
            row["original_size"] = list(original)
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
