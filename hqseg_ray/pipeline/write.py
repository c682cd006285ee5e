"""Stitch + write stage: one actor that assembles each video's chunks in order and writes it.

Chunks reach this actor in any order (several segment actors); each video's chunk results go
through the driver's per-video stitch step (``hqseg_ray.track.driver.VideoStitch``: the video's
prompted object ids reserved, chunks pushed strictly in chunk order, out-of-order ones waiting in a
small buffer of RLE-only results), exactly as in ``hqseg segment``. When the last chunk is in, the
video's frames are written as one Parquet file (atomically, through hqseg_ray.storage) and one status row
leaves the stage. A failed chunk fails its video (status row with the error) and the rest of the
job goes on.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import pickle
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from hqseg_ray.config import JobConfig
from hqseg_ray.pipeline.stages import as_str, error_of, rebatch, require, unbatch

logger = logging.getLogger(__name__)

STATUS_OUT = ("video_id", "video", "status", "error", "frames", "objects", "chunks", "seconds",
              "low_confidence_frames", "mean_score", "path", "config_hash", "finished_at",
              "encode_s", "relay_wait_s", "stitch_s", "workers", "input_key", "dropped_carries",
              "dropped_objects", "relay_wait_max_s")
LOW_CONFIDENCE = 0.7  # frames with an object scored below this are listed first for review


@dataclass
class _VideoState:
    video: str
    num_chunks: int
    stitch: Any                                       # hqseg_ray.track.driver.VideoStitch
    frames: list = field(default_factory=list)        # FrameResults, in order
    pts: dict = field(default_factory=dict)           # frame_index -> pts_time
    seconds: float = 0.0
    encode_s: float = 0.0
    relay_wait_s: float = 0.0
    relay_wait_max_s: float = 0.0
    workers: set = field(default_factory=set)
    labels: dict = field(default_factory=dict)        # {"labels": {object_id: name}, "default": name}
    num_frames: int = 0                               # frames of the source video (probe)


class VideoWriter:
    """Ray Data callable class (``map_batches``, a pool of one actor)."""

    name = "stitch/write"
    needs = ("video", "video_id", "chunk_index", "num_chunks", "error", "result", "reserved_ids_json")

    def __init__(self, config_json: str, job_id: Optional[str] = None,
                 input_keys: Optional[dict[str, str]] = None):
        self.config = JobConfig.model_validate_json(config_json)
        self.input_keys = dict(input_keys or {})  # video_id -> resume key (pipeline/resume.py)
        self.config_hash = self.config.config_hash()
        self.job_id = job_id
        self.videos: dict[str, _VideoState] = {}
        self.done: set[str] = set()
        from hqseg_ray.pipeline.metrics import JobMetrics

        self.metrics = JobMetrics()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out = []
        for row in unbatch(batch):
            status = self.process(row)
            if status is not None:
                out.append(status)
        return rebatch(out, STATUS_OUT)

    # ---------------------------------------------------------------------------------------
    def process(self, row: dict) -> Optional[dict]:
        require(self.name, row, self.needs)
        vid = as_str(row["video_id"])
        if vid in self.done:
            return None  # a later chunk of a video that already failed
        if error_of(row):
            return self._finish_failed(vid, as_str(row["video"]), error_of(row))
        state = self.videos.get(vid)
        if state is None:
            from hqseg_ray.track.driver import VideoStitch, with_auto

            reserved = json.loads(as_str(row["reserved_ids_json"]) or "[]")
            state = self.videos[vid] = _VideoState(as_str(row["video"]), int(row["num_chunks"]), VideoStitch(
                with_auto(self.config.tracking(), bool(row.get("auto"))), vid, int(row["num_chunks"]), reserved))
            state.labels = json.loads(as_str(row.get("labels_json")) or "{}")
            state.num_frames = int(json.loads(as_str(row.get("info_json")) or "{}").get("num_frames") or 0)
        k = int(row["chunk_index"])
        if k < state.stitch.next_chunk or k in state.stitch.pending:
            logger.warning("video %r: chunk %d arrived twice (a retried task?); the first copy is kept", vid, k)
            return None
        result = pickle.loads(row["result"])
        idx = row.get("frame_indices")
        pts = row.get("pts_times")
        if idx is not None and pts is not None:
            state.pts.update(zip((int(i) for i in np.asarray(idx)), (float(t) for t in np.asarray(pts))))
        state.seconds += float(row.get("seconds") or 0.0)
        state.encode_s += float(row.get("encode_s") or 0.0)
        state.relay_wait_s += float(row.get("relay_wait_s") or 0.0)
        state.relay_wait_max_s = max(state.relay_wait_max_s, float(row.get("relay_wait_s") or 0.0))
        if row.get("worker"):
            state.workers.add(as_str(row["worker"]))
        state.frames.extend(state.stitch.add(result, carry_dropped=bool(as_str(row.get("carry_dropped")))))
        if state.stitch.complete:
            return self._finish_ok(vid, state)
        return None

    def _forget(self, vid: str) -> None:
        self.videos.pop(vid, None)
        self.done.add(vid)
        if self.job_id and self.config.stitch.mechanism == "relay":
            try:
                import ray

                from hqseg_ray.pipeline.relay import relay_actor_name

                ray.get_actor(relay_actor_name(self.job_id)).forget_video.remote(vid)
            except Exception:  # noqa: BLE001 -- outside Ray (unit tests) or relay already gone
                pass

    def _status(self, vid: str, video: str) -> dict:
        return {k: None for k in STATUS_OUT} | {
            "video_id": vid, "video": video, "config_hash": self.config_hash,
            "input_key": self.input_keys.get(vid),
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}

    def _finish_failed(self, vid: str, video: str, error: str) -> dict:
        state = self.videos.get(vid)
        self._forget(vid)
        status = self._status(vid, video)
        status.update(status="failed", error=error, frames=0, objects=0,
                      chunks=state.num_chunks if state else 0,
                      seconds=state.seconds if state else 0.0)
        logger.warning("video %r failed: %s", vid, error)
        self.metrics.video("failed")
        return status

    def _write_review(self, vid: str, state: _VideoState, names: dict) -> None:
        """``OUTPUT/review/<vid>.json`` (the review queue); a failure here is logged, not fatal."""
        from hqseg_ray.export.review import review_from_frames, write_review

        try:
            n = state.num_frames or (max((fr.frame_index for fr in state.frames), default=-1) + 1)
            write_review(self.config.output.path, review_from_frames(
                state.frames, vid, n, self.config.chunking.stride, video=state.video,
                labels=names, default_label=state.labels.get("default")))
        except Exception as exc:  # noqa: BLE001 -- the masks are written; `hqseg export --format review` redoes it
            logger.warning("video %r: review queue not written: %s", vid, exc)

    def _finish_ok(self, vid: str, state: _VideoState) -> dict:
        from hqseg_ray.export.parquet import write_video_parquet

        status = self._status(vid, state.video)
        frames = state.frames
        scores = [s for fr in frames for s in fr.scores]
        low = sum(1 for fr in frames if fr.scores and min(fr.scores) < LOW_CONFIDENCE)
        status.update(status="ok", error="", frames=len({fr.frame_index for fr in frames}),
                      objects=len({o for fr in frames for o in fr.object_ids}), chunks=state.num_chunks,
                      seconds=state.seconds, low_confidence_frames=low,
                      mean_score=float(np.mean(scores)) if scores else None,
                      encode_s=state.encode_s, relay_wait_s=state.relay_wait_s, stitch_s=state.stitch.stitch_s,
                      workers=",".join(sorted(state.workers)), relay_wait_max_s=state.relay_wait_max_s,
                      **dropped_json(state.stitch))
        try:
            from hqseg_ray.export.labels import resolve_labels

            names = resolve_labels(frames, state.labels.get("labels"), state.labels.get("detections") or ())
            path = write_video_parquet(iter(frames), self.config.output.path, vid, pts_times=state.pts,
                                       meta={"config_hash": self.config_hash, "input_key": status["input_key"],
                                             "status": json.loads(json.dumps(
                                           {k: status[k] for k in ("frames", "objects", "chunks", "seconds",
                                                                   "low_confidence_frames", "mean_score")})),
                                           "video": state.video, "num_frames": state.num_frames,
                                           "stride": self.config.chunking.stride},
                                       labels=names, default_label=state.labels.get("default"))
            self._write_review(vid, state, names)
        except Exception as exc:  # noqa: BLE001
            return self._finish_failed(vid, state.video, f"write: {exc.__class__.__name__}: {exc}")
        status["path"] = str(path)
        self._forget(vid)
        self.metrics.scores(scores)
        self.metrics.video("ok")
        return status


def dropped_json(stitch: Any) -> dict:
    """The carries a video's chunks went without, as JSON text (Ray Data columns stay flat strings);
    ``status_lists`` turns them into the status table's list columns."""
    return {"dropped_carries": json.dumps(sorted(stitch.dropped_carries)),
            "dropped_objects": json.dumps(sorted(stitch.dropped_objects))}


def status_lists(status: dict) -> dict:
    """A status row with ``dropped_carries`` / ``dropped_objects`` as lists of ints (ids of the
    chunks that started without their predecessor's states, and of the objects that stopped there)."""
    for key in ("dropped_carries", "dropped_objects"):
        v = status.get(key)
        if isinstance(v, (str, bytes)):
            status[key] = [int(x) for x in json.loads(v or "[]")]
        elif v is None:
            status[key] = []
    return status
