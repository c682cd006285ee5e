"""The primary output: one Parquet file per video, one row per (frame, object).

Layout: ``OUT/masks/video_id=<id>/part-0.parquet`` (Hive-style partition folder). The schema is
defined once here (:data:`MASKS_SCHEMA`) and versioned through the file metadata key
``hqseg.schema_version``; ``hqseg.meta`` holds caller metadata as JSON (config hash, status).
Files are written through :mod:`hqseg_ray.storage` (any filesystem pyarrow.fs reaches: local,
``file://``, ``s3://``, ``gs://``, fsspec): on a local disk to a hidden temporary name and renamed,
on an object store as one PUT of the complete file, so a reader never sees a half-written file and
a killed job never leaves one behind under the final name.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = "2"  # 2: + label (readers of version 1 files treat label as null)
MASKS_SCHEMA = pa.schema([
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("frame_index", pa.int64(), nullable=False),      # 0-based, presentation order
    pa.field("pts_time", pa.float64()),                        # seconds; null when unknown
    pa.field("object_id", pa.int64(), nullable=False),
    pa.field("score", pa.float32()),                           # predicted IoU of the mask
    pa.field("rle_counts", pa.string(), nullable=False),       # COCO compressed RLE counts
    pa.field("rle_size", pa.list_(pa.int32()), nullable=False),  # [height, width]
    pa.field("bbox_xywh", pa.list_(pa.float32()), nullable=False),  # tight box, pixels, COCO xywh
    pa.field("area", pa.int64(), nullable=False),              # mask pixels
    pa.field("source", pa.string(), nullable=False),           # prompt | track | auto | stitch
    pa.field("chunk_index", pa.int32()),                       # chunk whose prediction was kept
    pa.field("label", pa.string()),                            # category name; null = none given
])
_ROW_GROUP = 8192
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")


def video_parquet_key(video_id: str) -> str:
    """``masks/video_id=<id>/part-0.parquet`` (relative to the output); raises ValueError for ids
    unsafe as a folder name."""
    if not isinstance(video_id, str) or not _SAFE_ID.match(video_id) or video_id in (".", ".."):
        raise ValueError(f"video_id {video_id!r} cannot name an output folder: use letters, digits, '.', '_' "
                         "and '-' only")
    return f"masks/video_id={video_id}/part-0.parquet"


def video_parquet_path(out_dir: Union[str, os.PathLike], video_id: str) -> str:
    """``OUT/masks/video_id=<id>/part-0.parquet`` (a path or URI like ``out_dir``)."""
    key = video_parquet_key(video_id)
    return f"{str(out_dir).rstrip('/')}/{key}"


def _pts_lookup(pts_times) -> Any:
    if pts_times is None:
        return lambda f: None
    if isinstance(pts_times, Mapping):
        return lambda f: None if pts_times.get(f) is None else float(pts_times[f])
    seq = list(pts_times)
    return lambda f: float(seq[f]) if 0 <= f < len(seq) else None


def _rows(frame_results: Iterable[Any], video_id: str, pts, pts_given: bool,
          label_of=lambda oid: None) -> Iterator[dict]:
    from hqseg_ray.masks import rle_area, rle_bbox_xywh

    for fr in frame_results:
        chunks = list(getattr(fr, "chunk_indices", None) or [])
        fr_pts = getattr(fr, "pts_time", None)
        for k, oid in enumerate(fr.object_ids):
            rle = fr.rles[k]
            counts = rle["counts"]
            if isinstance(counts, list):
                raise ValueError(f"video {video_id!r} frame {fr.frame_index} object {oid}: uncompressed RLE; "
                                 "the tracker emits compressed RLE (counts as a string)")
            yield {"video_id": video_id, "frame_index": int(fr.frame_index),
                   "pts_time": pts(int(fr.frame_index)) if pts_given else fr_pts, "object_id": int(oid), "score": float(fr.scores[k]),
                   "rle_counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
                   "rle_size": [int(v) for v in rle["size"]], "bbox_xywh": rle_bbox_xywh(rle),
                   "area": rle_area(rle), "source": str(fr.sources[k]),
                   "chunk_index": int(chunks[k]) if k < len(chunks) else int(fr.chunk_index),
                   "label": label_of(int(oid))}


def write_video_parquet(frame_results: Iterable[Any], out_dir: Union[str, os.PathLike], video_id: str,
                        pts_times: Union[Mapping[int, float], Sequence[float], None] = None,
                        meta: Optional[dict] = None, labels: Optional[Mapping[int, str]] = None,
                        default_label: Optional[str] = None) -> str:
    """Write one video's masks atomically; returns the file path.

    Args:
        frame_results: ``FrameResult``-like objects (``frame_index``, ``object_ids``, ``rles``,
            ``scores``, ``sources``, ``chunk_index`` and optionally per-object ``chunk_indices``),
            consumed as a stream: row groups of 8192 rows are written as they fill.
        out_dir: the job's output directory (``masks/video_id=<id>/`` is created under it).
        video_id: the video's id (letters, digits, ``.``, ``_``, ``-``).
        pts_times: presentation time in seconds per frame index (a dict, or a sequence indexed by
            frame index); None takes each result's ``pts_time`` (null when it has none).
        meta: JSON-serialisable metadata stored in the file (``read_video_meta`` returns it).
        labels: category name per object id (the ``label`` column); objects not in it get
            ``default_label`` (None: a null label).
    """
    from hqseg_ray.storage import open_store

    key = video_parquet_key(video_id)
    store = open_store(str(out_dir))
    schema = MASKS_SCHEMA.with_metadata({"hqseg.schema_version": SCHEMA_VERSION, "hqseg.video_id": video_id,
                                         "hqseg.meta": json.dumps(meta or {}, sort_keys=True)})
    pts = _pts_lookup(pts_times)
    # store.writer: a hidden temporary file renamed into place (local), or one PUT of the complete
    # file (object stores); dataset readers (pyarrow, Ray, Spark) skip a dot-file a crash leaves
    with store.writer(key) as f, pq.ParquetWriter(f, schema, compression="zstd") as writer:
        buf: list[dict] = []
        names = {int(k): v for k, v in (labels or {}).items()}
        for row in _rows(frame_results, video_id, pts, pts_times is not None,
                         lambda oid: names.get(oid, default_label)):
            buf.append(row)
            if len(buf) >= _ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(buf, schema=schema))
                buf = []
        writer.write_table(pa.Table.from_pylist(buf, schema=schema))
    return store.url(key)


def read_video_meta(path: Union[str, os.PathLike]) -> dict:
    """The ``meta`` dict a file was written with, plus ``schema_version``; {} for foreign files."""
    from hqseg_ray.storage import split_uri

    store, name = split_uri(str(path))
    md = store.read_schema(name).metadata or {}
    raw = md.get(b"hqseg.meta")
    if raw is None:
        return {}
    out = json.loads(raw.decode())
    out.setdefault("schema_version", md.get(b"hqseg.schema_version", b"").decode())
    return out


def read_video_parquet(path: Union[str, os.PathLike]) -> Iterator[Any]:
    """Read a masks file back as ``FrameResult`` objects (frames with at least one mask), in
    frame order."""
    from hqseg_ray.track.types import FrameResult

    from hqseg_ray.storage import split_uri

    store, name = split_uri(str(path))
    table = store.read_table(name).sort_by([("frame_index", "ascending"), ("object_id", "ascending")])
    cols = table.to_pydict()
    cur: Optional[FrameResult] = None
    for i in range(table.num_rows):
        f = int(cols["frame_index"][i])
        if cur is None or cur.frame_index != f:
            if cur is not None:
                yield cur
            cur = FrameResult(f, [], [], [], [], int(cols["chunk_index"][i] or 0), [])
        cur.object_ids.append(int(cols["object_id"][i]))
        cur.rles.append({"size": list(cols["rle_size"][i]), "counts": cols["rle_counts"][i]})
        cur.scores.append(float(cols["score"][i]))
        cur.sources.append(cols["source"][i])
        cur.chunk_indices.append(int(cols["chunk_index"][i] or 0))
        cur.chunk_index = max(cur.chunk_index, cur.chunk_indices[-1])
    if cur is not None:
        yield cur
