"""Resume that cannot go stale: which videos of a manifest are already done.

A video is done when its masks file exists, is readable, and carries the same **input key**: a
hash of everything that decides its masks —

* the job's config hash (model, chunking, tracker, auto, stitch settings; ``JobConfig.config_hash``),
* the video's URI and its size and modification time (``pyarrow.fs`` ``FileInfo``; for a frame
  folder the count, total size and newest mtime of its images),
* its prompts (canonical JSON) and its row's ``auto`` flag.

So editing one video's prompts, or replacing the video file, redoes that video only. An
unreadable or corrupt masks file makes its video redone, with a warning, never a crashed job.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from hqseg_ray.config import JobConfig
from hqseg_ray.storage import Store

logger = logging.getLogger(__name__)

STAT_THREADS = 16  # object-store HEAD / footer reads run in parallel (latency-bound, not CPU-bound)


def video_fingerprint(uri: str) -> dict:
    """``{"size", "mtime_ns"}`` of a video file (``{"files", "size", "mtime_ns"}`` of a frame
    folder); ``{"error": ...}`` when it cannot be reached (the plan stage then fails the video)."""
    import pyarrow.fs as pafs

    from hqseg_ray.storage import resolve

    try:
        fs, path = resolve(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return {"size": info.size, "mtime_ns": info.mtime_ns}
        if info.type == pafs.FileType.Directory:
            from hqseg_ray.video.source import IMAGE_EXTS

            files = [i for i in fs.get_file_info(pafs.FileSelector(path))
                     if i.type == pafs.FileType.File and i.base_name.lower().endswith(IMAGE_EXTS)]
            return {"files": len(files), "size": sum(i.size or 0 for i in files),
                    "mtime_ns": max((i.mtime_ns or 0 for i in files), default=0)}
        return {"error": "missing"}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{exc.__class__.__name__}: {exc}"}


def input_key(config_hash: str, row: dict, fingerprint: dict) -> str:
    """The skip key of one manifest row (16 hex digits)."""
    body = {"config": config_hash, "video": row["video"], "stat": fingerprint,
            "prompts": json.loads(row.get("prompts_json") or "[]"), "auto": bool(row.get("auto"))}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def add_input_keys(config: JobConfig, rows: list[dict]) -> None:
    """Set ``row["input_key"]`` on every manifest row (videos are stat'ed in parallel)."""
    chash = config.config_hash()
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        prints = list(pool.map(video_fingerprint, [r["video"] for r in rows]))
    for row, fp in zip(rows, prints):
        row["input_key"] = input_key(chash, row, fp)


def _read_meta(store: Store, key: str) -> Optional[dict]:
    """The masks file's metadata; None when absent or unreadable (with a warning)."""
    from hqseg_ray.export.parquet import read_video_meta

    try:
        if not store.exists(key):
            return None
        return read_video_meta(store.url(key))
    except Exception as exc:  # noqa: BLE001 -- a corrupt file is redone, never a crashed job
        logger.warning("masks file %r is unreadable (%s: %s): its video is redone", store.url(key),
                       exc.__class__.__name__, exc)
        return None


def resume_filter(config: JobConfig, rows: list[dict], previous: dict[str, dict],
                  store: Optional[Store] = None) -> tuple[list[dict], list[dict]]:
    """Split rows (with ``input_key``) into (to run, status rows of the skipped ones)."""
    from hqseg_ray.export.parquet import video_parquet_key
    from hqseg_ray.storage import open_store

    store = store or open_store(config.output.path)
    if any("input_key" not in r for r in rows):
        add_input_keys(config, rows)
    todo, candidates = [], []
    for row in rows:
        if config.output.overwrite or row.get("duplicate"):
            todo.append(row)
            continue
        try:
            candidates.append((row, video_parquet_key(row["video_id"])))
        except ValueError:  # an id that cannot name a folder: the plan stage fails it with the reason
            todo.append(row)
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        metas = list(pool.map(lambda c: _read_meta(store, c[1]), candidates))
    skipped, chash = [], config.config_hash()
    for (row, key), meta in zip(candidates, metas):
        if not meta or meta.get("input_key") != row["input_key"]:
            todo.append(row)
            continue
        prev = previous.get(row["video_id"]) or {}
        status = dict(meta.get("status") or {})
        status.update({k: v for k, v in prev.items() if prev.get("input_key") == row["input_key"]})
        status.update(video_id=row["video_id"], video=row["video"], status="ok", error=None,
                      path=store.url(key), config_hash=chash, input_key=row["input_key"])
        skipped.append(status)
    order = {id(r): i for i, r in enumerate(rows)}
    todo.sort(key=lambda r: order[id(r)])
    return todo, skipped
