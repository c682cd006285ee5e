"""The bulk labeling job: build the Ray Data pipeline, run it, keep the status table, resume.

``run_job(config)`` is what ``hqseg label`` calls after Ray is up. Steps:

1. read the manifest (one row per video) and drop rows that are already done (same config hash,
   masks file present: *resume*); a driver killed mid-job reruns into exactly the same output;
2. stream the rest through plan -> decode -> segment -> stitch/write (``build_pipeline``);
3. collect one status row per video and write ``OUTPUT/videos.parquet`` atomically, merged with
   the rows of videos skipped by the resume;
4. write the optional exports and print a summary.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from hqseg_ray.config import JobConfig

logger = logging.getLogger(__name__)

STATUS_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("video", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("frames", pa.int64()), ("objects", pa.int64()), ("chunks", pa.int64()), ("seconds", pa.float64()),
    ("low_confidence_frames", pa.int64()), ("mean_score", pa.float64()), ("path", pa.string()),
    ("config_hash", pa.string()), ("finished_at", pa.string()), ("encode_s", pa.float64()),
    ("relay_wait_s", pa.float64()), ("stitch_s", pa.float64()), ("workers", pa.string()),
    # chunks tracked without their predecessor's states (the relay gave up), and the objects that stopped there
    ("dropped_carries", pa.list_(pa.int64())), ("dropped_objects", pa.list_(pa.int64())),
    ("relay_wait_max_s", pa.float64()),  # the longest a segment actor sat waiting on this video's relay
])


@dataclass
class JobSummary:
    """What a finished job reports (also printed by ``hqseg label``)."""

    output: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    frames: int = 0
    objects: int = 0
    wall_s: float = 0.0
    statuses: list[dict] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def text(self) -> str:
        lines = [
            f"videos: {self.ok} ok, {self.failed} failed, {self.skipped} skipped (already done)",
            f"frames: {self.frames} labelled in {self.wall_s:.1f} s ({self.frames_per_s:.2f} frames/s), "
            f"objects: {self.objects}",
            f"masks:  {os.path.join(self.output, 'masks')}/video_id=<id>/ (Parquet, COCO RLE)",
            f"status: {os.path.join(self.output, 'videos.parquet')}",
        ]
        for s in self.statuses:
            if s["status"] != "ok":
                lines.append(f"  failed {s['video_id']!r}: {s['error']}")
        return "\n".join(lines)


def read_status_table(output: str) -> dict[str, dict]:
    path = os.path.join(output, "videos.parquet")
    if not os.path.exists(path):
        return {}
    return {r["video_id"]: r for r in pq.read_table(path).to_pylist()}


def write_status_table(output: str, rows: list[dict]) -> str:
    path = os.path.join(output, "videos.parquet")
    os.makedirs(output, exist_ok=True)
    rows = sorted(rows, key=lambda r: r["video_id"] or "")
    table = pa.Table.from_pylist([{k: r.get(k) for k in STATUS_SCHEMA.names} for r in rows], schema=STATUS_SCHEMA)
    tmp = path + f".tmp-{uuid.uuid4().hex[:8]}"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def manifest_rows(config: JobConfig) -> list[dict]:
    """Manifest -> rows for the pipeline (prompts as JSON), duplicates of a video_id flagged."""
    from hqseg_ray.prompts import load_manifest

    if not config.input.manifest:
        raise ValueError("input.manifest is not set (a JSONL/Parquet manifest, or a folder/glob of videos)")
    rows, seen = [], set()
    for r in load_manifest(config.input.manifest):
        row = {"video": r.video, "video_id": r.video_id,
               "prompts_json": json.dumps([p.model_dump(exclude_none=True) for p in r.prompts]),
               "auto": bool(getattr(r, "auto", None) or False)}
        if r.video_id in seen:
            row["duplicate"] = True
        seen.add(r.video_id)
        rows.append(row)
    return rows


def resume_filter(config: JobConfig, rows: list[dict], previous: dict[str, dict]) -> tuple[list[dict], list[dict]]:
    """Split rows into (to run, skipped status rows): a video is done when its masks file exists
    with this config hash (the file's metadata says so; the status table may lag a killed driver)."""
    from hqseg_ray.export.parquet import read_video_meta, video_parquet_path

    todo, skipped = [], []
    chash = config.config_hash()
    for row in rows:
        if config.output.overwrite or row.get("duplicate"):
            todo.append(row)
            continue
        try:
            path = video_parquet_path(config.output.path, row["video_id"])
        except ValueError:  # an id that cannot name a folder: the plan stage fails it with the reason
            todo.append(row)
            continue
        meta = read_video_meta(path) if os.path.exists(path) else None
        if meta and meta.get("config_hash") == chash:
            prev = previous.get(row["video_id"]) or {}
            status = dict(meta.get("status") or {})
            status.update({k: v for k, v in prev.items() if prev.get("config_hash") == chash})
            status.update(video_id=row["video_id"], video=row["video"], status="ok", error=None,
                          path=path, config_hash=chash)
            skipped.append(status)
        else:
            todo.append(row)
    return todo, skipped


def run_job(config: JobConfig, job_id: Optional[str] = None, progress: bool = True) -> JobSummary:
    """Run a labeling job on the Ray cluster this process is connected to."""
    import ray

    from hqseg_ray.pipeline.build import build_pipeline

    t0 = time.monotonic()
    out = config.output.path
    os.makedirs(os.path.join(out, "masks"), exist_ok=True)
    rows = manifest_rows(config)
    previous = read_status_table(out)
    todo, skipped = resume_filter(config, rows, previous)
    logger.info("job: %d videos in the manifest, %d already done, %d to label", len(rows), len(skipped), len(todo))
    statuses: dict[str, dict] = {s["video_id"]: s for s in skipped}
    job_id = job_id or uuid.uuid4().hex[:12]
    relay = None
    if todo:
        if config.stitch.mechanism == "relay":  # both backends: ServeSegmentStage relays too
            from hqseg_ray.pipeline.relay import start_relay

            relay = start_relay(job_id)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ds = build_pipeline(config, todo, job_id=job_id)
        from hqseg_ray.pipeline.write import status_lists

        for status in ds.iter_rows():
            status = status_lists(dict(status))
            statuses[status["video_id"]] = status
            logger.info("video %r: %s%s", status["video_id"], status["status"],
                        f" ({status['error']})" if status.get("error") else "")
        for row in todo:  # a video that produced no status row (should not happen): say so
            if row["video_id"] not in statuses:
                statuses[row["video_id"]] = {"video_id": row["video_id"], "video": row["video"], "status": "failed",
                                             "error": "no result (a chunk was lost); rerun to redo this video",
                                             "config_hash": config.config_hash()}
        if relay is not None:
            ray.kill(relay)
    # keep status rows of videos no longer in this manifest but written earlier (same output folder)
    for vid, prev in previous.items():
        statuses.setdefault(vid, prev)
    write_status_table(out, list(statuses.values()))
    summary = JobSummary(output=out, skipped=len(skipped), wall_s=time.monotonic() - t0)
    manifest_ids = {r["video_id"] for r in rows}
    skipped_ids = {k["video_id"] for k in skipped}
    for s in statuses.values():
        if s["video_id"] not in manifest_ids:
            continue
        summary.statuses.append(s)
        if s["status"] == "ok":
            if s["video_id"] not in skipped_ids:
                summary.ok += 1
                summary.frames += int(s.get("frames") or 0)
                summary.objects += int(s.get("objects") or 0)
        else:
            summary.failed += 1
    if config.output.formats:
        from hqseg_ray.export import export_all

        export_all(out, config.output.formats)
    return summary
