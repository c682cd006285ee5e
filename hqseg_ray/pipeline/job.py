"""The bulk labeling job: build the Ray Data pipeline, run it, keep the status table, resume.

``run_job(config)`` is what ``hqseg label`` calls after Ray is up. Steps:

1. check the output location (a local path on a multi-node cluster needs ``output.shared``) and
   take its lock (``_hqseg.lock``: a second job into the same output refuses);
2. read the manifest (one row per video) and drop rows that are already done (masks file present
   with the same input key: config, video URI/size/mtime, prompts; see ``resume.py``); a driver
   killed mid-job reruns into exactly the same output;
3. stream the rest through plan -> decode -> segment -> stitch/write (``build_pipeline``); videos
   whose chunks were lost with a killed writer actor are run again once;
4. collect one status row per video and write ``OUTPUT/videos.parquet`` atomically, merged with
   the rows of videos skipped by the resume;
5. write the optional exports and print a summary.

Every write goes through :mod:`hqseg_ray.storage` (local, file://, s3://, gs://, fsspec).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa

from hqseg_ray.config import JobConfig

logger = logging.getLogger(__name__)

STATUS_SCHEMA = pa.schema([
    ("video_id", pa.string()), ("video", pa.string()), ("status", pa.string()), ("error", pa.string()),
    ("frames", pa.int64()), ("objects", pa.int64()), ("chunks", pa.int64()), ("seconds", pa.float64()),
    ("low_confidence_frames", pa.int64()), ("mean_score", pa.float64()), ("path", pa.string()),
    ("config_hash", pa.string()), ("finished_at", pa.string()), ("encode_s", pa.float64()),
    ("relay_wait_s", pa.float64()), ("stitch_s", pa.float64()), ("workers", pa.string()),
    ("input_key", pa.string()),
    # chunks tracked without their predecessor's states (the relay gave up), and the objects that stopped there
    ("dropped_carries", pa.list_(pa.int64())), ("dropped_objects", pa.list_(pa.int64())),
    ("relay_wait_max_s", pa.float64()),  # the longest a segment actor sat waiting on this video's relay
])
LOST_VIDEO_RETRIES = 1  # passes that redo videos whose chunks were lost with a killed writer actor


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
            f"masks:  {self.output.rstrip('/')}/masks/video_id=<id>/ (Parquet, COCO RLE)",
            f"status: {self.output.rstrip('/')}/videos.parquet",
        ]
        for s in self.statuses:
            if s["status"] != "ok":
                lines.append(f"  failed {s['video_id']!r}: {s['error']}")
        return "\n".join(lines)


def read_status_table(output) -> dict[str, dict]:
    """``{video_id: status row}`` of ``OUTPUT/videos.parquet`` ({} when absent; an unreadable table
    is logged and treated as absent: the masks files' metadata still drives the resume)."""
    from hqseg_ray.storage import open_store

    store = open_store(output) if isinstance(output, str) else output
    try:
        if not store.exists("videos.parquet"):
            return {}
        return {r["video_id"]: r for r in store.read_table("videos.parquet").to_pylist()}
    except Exception as exc:  # noqa: BLE001 -- never a crashed job
        logger.warning("status table %r is unreadable (%s: %s): it is rebuilt from this run and the masks files",
                       store.url("videos.parquet"), exc.__class__.__name__, exc)
        return {}


def write_status_table(output, rows: list[dict]) -> str:
    from hqseg_ray.storage import open_store

    store = open_store(output) if isinstance(output, str) else output
    rows = sorted(rows, key=lambda r: r["video_id"] or "")
    table = pa.Table.from_pylist([{k: r.get(k) for k in STATUS_SCHEMA.names} for r in rows], schema=STATUS_SCHEMA)
    return store.write_table("videos.parquet", table)


def manifest_rows(config: JobConfig) -> list[dict]:
    """Manifest -> rows for the pipeline (prompts as JSON), duplicates of a video_id flagged."""
    from hqseg_ray.prompts import load_manifest

    if not config.input.manifest:
        raise ValueError("input.manifest is not set (a JSONL/Parquet manifest, or a folder/glob of videos)")
    rows, seen = [], set()
    for r in load_manifest(config.input.manifest):
        row = {"video": r.video, "video_id": r.video_id,
               "prompts_json": json.dumps([p.model_dump(exclude_none=True) for p in r.prompts]),
               "auto": bool(getattr(r, "auto", None) or False),
               "labels_json": json.dumps({"labels": r.labels, "default": r.default_label})}
        if r.video_id in seen:
            row["duplicate"] = True
        seen.add(r.video_id)
        rows.append(row)
    return rows


def sweep_temp_files(store) -> int:
    """Remove hidden temporary files a killed writer left in ``masks/*/`` (local disks only; object
    stores never get temporary objects). Run under the output's lock. Returns the count."""
    if not store.local:
        return 0
    n = 0
    for folder in store.list("masks"):
        if folder.is_dir:
            for e in store.list(f"masks/{folder.name}"):
                if e.name.startswith(".") and (e.name.endswith(".tmp") or ".tmp-" in e.name):
                    n += store.delete(f"masks/{folder.name}/{e.name}")
    return n


def _run_pass(config: JobConfig, rows: list[dict], job_id: str, progress: bool, out: dict[str, dict]) -> None:
    """One Ray Data run over ``rows``; adds ``{video_id: status}`` of each finished video to ``out``
    as it arrives (so a pass that dies midway keeps what it finished)."""
    import ray

    from hqseg_ray.pipeline.build import build_pipeline

    relay = None
    if config.stitch.mechanism == "relay":  # both backends: ServeSegmentStage relays too
        from hqseg_ray.pipeline.relay import start_relay

        relay = start_relay(job_id)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        from hqseg_ray.pipeline.write import status_lists

        for status in build_pipeline(config, rows, job_id=job_id).iter_rows():
            status = status_lists(dict(status))
            out[status["video_id"]] = status
            logger.info("video %r: %s%s", status["video_id"], status["status"],
                        f" ({status['error']})" if status.get("error") else "")
    finally:
        if relay is not None:
            ray.kill(relay)


def _apply_corrections(config: JobConfig, rows: list[dict]) -> None:
    """Merge ``input.corrections`` into the rows' prompts (before the resume keys, which hash them:
    a video whose corrections changed is labelled again, the others resume)."""
    if not config.input.corrections:
        return
    from hqseg_ray.corrections import apply_to_rows, read_corrections

    corrected, unknown = apply_to_rows(rows, read_corrections(config.input.corrections))
    if unknown:
        logger.warning("corrections for %d video(s) not in the manifest, ignored: %s", len(unknown), unknown[:10])
    logger.info("corrections: merged into %d video(s): %s", len(corrected), corrected[:10])


def run_job(config: JobConfig, job_id: Optional[str] = None, progress: bool = True) -> JobSummary:
    """Run a labeling job on the Ray cluster this process is connected to."""
    from hqseg_ray.pipeline.lock import OutputLock
    from hqseg_ray.pipeline.placement import check_output_placement
    from hqseg_ray.pipeline.resume import add_input_keys, resume_filter
    from hqseg_ray.storage import open_store

    t0 = time.monotonic()
    out = config.output.path
    store = open_store(out)
    check_output_placement(config, store)
    job_id = job_id or uuid.uuid4().hex[:12]
    with OutputLock(store, job_id, config.output.lock_ttl_s):
        if sweep_temp_files(store):
            logger.info("output %r: removed temporary files of an earlier, killed run", out)
        rows = manifest_rows(config)
        _apply_corrections(config, rows)  # before the input keys: they hash the prompts
        add_input_keys(config, rows)
        previous = read_status_table(store)
        todo, skipped = resume_filter(config, rows, previous, store)
        logger.info("job: %d videos in the manifest, %d already done, %d to label", len(rows), len(skipped),
                    len(todo))
        statuses: dict[str, dict] = {s["video_id"]: s for s in skipped}
        pending, attempt = todo, 0
        while pending:
            try:
                _run_pass(config, pending, job_id if attempt == 0 else f"{job_id}-r{attempt}", progress, statuses)
            except Exception as exc:  # noqa: BLE001 -- e.g. an actor that Ray gave up restarting
                if attempt >= LOST_VIDEO_RETRIES:
                    raise
                logger.warning("job: the pipeline stopped (%s: %s); unfinished videos run again",
                               exc.__class__.__name__, exc)
            pending = [r for r in pending if r["video_id"] not in statuses]
            if pending and attempt < LOST_VIDEO_RETRIES:
                attempt += 1
                logger.warning("job: %d video(s) got no result (their chunks were lost, e.g. with a killed "
                               "writer actor): running them again: %s", len(pending),
                               [r["video_id"] for r in pending][:20])
                continue
            chash = config.config_hash()
            for row in pending:  # still no status row: say so
                statuses[row["video_id"]] = {"video_id": row["video_id"], "video": row["video"], "status": "failed",
                                             "error": "no result (a chunk was lost); rerun to redo this video",
                                             "config_hash": chash, "input_key": row["input_key"]}
            break
        # keep status rows of videos no longer in this manifest but written earlier (same output)
        for vid, prev in previous.items():
            statuses.setdefault(vid, prev)
        write_status_table(store, list(statuses.values()))
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
