"""Exports from the Parquet output: COCO, YouTube-VIS, DAVIS palette PNGs and overlay videos.

Everything here reads ``OUTPUT/masks/video_id=<id>/*.parquet`` (one row per frame and object, see
``docs/formats.md``) and ``OUTPUT/videos.parquet`` (one status row per video), one video at a
time: memory holds one video's rows (RLE strings, not masks) and the masks of one frame.

    export_all("out", ["coco", "davis"])            # or: hqseg export out --format coco --format davis

Layout written under OUTPUT::

    exports/coco/<video_id>.json         COCO instances, one file per video (compressed RLE)
    exports/ytvis/instances.json         YouTube-VIS, one file for all exported videos
    exports/davis/<video_id>/00000.png   palette PNG per frame, pixel value = object id
    overlay/<video_id>.mp4, .png         H.264 overlay video and a one-frame preview
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

FORMATS = ("coco", "ytvis", "davis", "overlay")

MASK_COLUMNS = ("frame_index", "pts_time", "object_id", "score", "rle_counts", "rle_size",
                "bbox_xywh", "area", "source")


class ExportError(ValueError):
    """Some videos could not be exported; raised after every other video was written.

    ``paths`` holds ``{format: path}`` of what was written (see :func:`export_all`).
    """

    def __init__(self, message: str, paths: Optional[dict] = None) -> None:
        super().__init__(message)
        self.paths = dict(paths or {})


@dataclass
class ObjectMask:
    """One (frame, object) row of the Parquet output; the mask is decoded only on request.

    Attributes:
        object_id: track id, stable across the video.
        score: predicted mask quality in [0, 1].
        rle: COCO compressed RLE ``{"size": [H, W], "counts": str}``.
        bbox_xywh: ``[x, y, w, h]`` float pixels (COCO convention).
        area: mask pixels.
        source: ``prompt`` | ``track`` | ``auto`` | ``stitch``.
    """

    object_id: int
    score: float
    rle: dict
    bbox_xywh: list
    area: int
    source: str

    def mask(self) -> np.ndarray:
        """``[H, W]`` bool mask."""
        from hqseg_ray.masks import rle_decode

        return rle_decode(self.rle)


@dataclass
class VideoRef:
    """A video of the output: its status row (if any) and its masks folder (if any)."""

    video_id: str
    uri: Optional[str]
    frames: Optional[int]
    mask_dir: Optional[str]


class VideoMasks:
    """One video's rows, sorted by (frame_index, object_id), with lazy per-frame access.

    Attributes:
        video_id, uri: as in ``videos.parquet`` (``uri`` may be None for a masks-only output).
        num_frames: frames of the video: the status row's ``frames``, at least the last masked
            frame + 1, else the probe's count.
        height, width: mask size (``rle_size``), else the probed frame size.
    """

    def __init__(self, ref: VideoRef, table) -> None:
        self.video_id, self.uri = ref.video_id, ref.uri
        table = table.sort_by([("frame_index", "ascending"), ("object_id", "ascending")])
        self._fi = np.asarray(table.column("frame_index").to_numpy(), dtype=np.int64)
        self._cols = {c: table.column(c).to_pylist() for c in MASK_COLUMNS if c != "frame_index"}
        sizes = {tuple(s) for s in self._cols["rle_size"]}
        if len(sizes) > 1:
            raise ValueError(f"video {self.video_id!r}: masks of different sizes {sorted(sizes)}")
        self.num_frames = max(int(ref.frames or 0), int(self._fi[-1]) + 1 if len(self._fi) else 0)
        self.height, self.width = (int(v) for v in sizes.pop()) if sizes else (0, 0)
        if not self.num_frames or not self.height:
            info = self.probe()
            self.num_frames = self.num_frames or info.num_frames
            self.height, self.width = (self.height, self.width) if self.height else (info.height, info.width)

    def probe(self):
        """The source video's ``VideoInfo`` (raises when the output does not name it)."""
        from hqseg_ray.video import probe_video

        if not self.uri:
            raise ValueError(f"video {self.video_id!r}: no source video in videos.parquet to read")
        return probe_video(self.uri)

    @property
    def object_ids(self) -> list[int]:
        return sorted({int(o) for o in self._cols["object_id"]})

    def at(self, frame_index: int) -> list[ObjectMask]:
        """Non-empty masks of one frame, sorted by object id."""
        lo, hi = np.searchsorted(self._fi, [frame_index, frame_index + 1])
        c = self._cols
        out = []
        for i in range(int(lo), int(hi)):
            if not c["area"][i]:
                continue  # the object is lost on this frame: no annotation, no pixels
            out.append(ObjectMask(int(c["object_id"][i]), float(c["score"][i]),
                                  {"size": [int(v) for v in c["rle_size"][i]], "counts": c["rle_counts"][i]},
                                  [float(v) for v in c["bbox_xywh"][i]], int(c["area"][i]), str(c["source"][i])))
        return out

    def frames(self) -> Iterator[tuple[int, list[ObjectMask]]]:
        """``(frame_index, masks)`` for every frame ``0 .. num_frames - 1`` (empty lists included)."""
        for t in range(self.num_frames):
            yield t, self.at(t)

    def busiest_frame(self) -> int:
        """Index of the first frame with the most non-empty masks (0 when there are none)."""
        area = np.asarray(self._cols["area"], dtype=np.int64)
        fi = self._fi[area > 0]
        if fi.size == 0:
            return 0
        counts = np.bincount(fi)
        return int(np.argmax(counts))


def list_videos(output_dir: str, video_ids: Optional[Sequence[str]] = None) -> tuple[list[VideoRef], list[str]]:
    """Videos to export: status ``ok`` rows of ``videos.parquet`` plus masks folders with no row.

    Returns ``(refs, problems)``: a requested video that failed in the job or is unknown is a
    problem (a message), not an exception, so that the other videos are still exported.
    """
    import pyarrow.parquet as pq

    mask_root = os.path.join(output_dir, "masks")
    dirs = {}
    if os.path.isdir(mask_root):
        for name in sorted(os.listdir(mask_root)):
            if name.startswith("video_id=") and os.path.isdir(os.path.join(mask_root, name)):
                dirs[urllib.parse.unquote(name[len("video_id="):])] = os.path.join(mask_root, name)
    status_path = os.path.join(output_dir, "videos.parquet")
    statuses = {}
    if os.path.exists(status_path):
        statuses = {r["video_id"]: r for r in pq.read_table(status_path).to_pylist()}
    if not statuses and not dirs:
        raise FileNotFoundError(f"{output_dir!r} holds no videos.parquet and no masks/video_id=*/ folders: "
                                "is it the output.path of a labeling job?")
    wanted = list(video_ids) if video_ids else sorted(set(statuses) | set(dirs))
    refs, problems = [], []
    for vid in wanted:
        row = statuses.get(vid)
        if row is None and vid not in dirs:
            problems.append(f"video {vid!r} is not in {output_dir!r}")
        elif row is not None and row.get("status") != "ok":
            msg = f"video {vid!r} has status {row.get('status')!r} ({row.get('error')}): nothing to export"
            if video_ids:
                problems.append(msg)
            else:
                logger.info("%s", msg)
        else:
            refs.append(VideoRef(vid, (row or {}).get("video"), (row or {}).get("frames"), dirs.get(vid)))
    return refs, problems


def load_video(ref: VideoRef) -> VideoMasks:
    """Read one video's rows (every ``*.parquet`` in its folder; temporary files are skipped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    if ref.mask_dir:
        for name in sorted(os.listdir(ref.mask_dir)):
            if name.endswith(".parquet") and not name.startswith((".", "_")) and ".tmp" not in name:
                tables.append(pq.read_table(os.path.join(ref.mask_dir, name), columns=list(MASK_COLUMNS)))
    table = pa.concat_tables(tables, promote_options="permissive") if tables else _empty_table()
    return VideoMasks(ref, table)


def _empty_table():
    import pyarrow as pa

    return pa.table({"frame_index": pa.array([], pa.int64()), "pts_time": pa.array([], pa.float64()),
                     "object_id": pa.array([], pa.int64()), "score": pa.array([], pa.float64()),
                     "rle_counts": pa.array([], pa.string()), "rle_size": pa.array([], pa.list_(pa.int64())),
                     "bbox_xywh": pa.array([], pa.list_(pa.float64())), "area": pa.array([], pa.int64()),
                     "source": pa.array([], pa.string())})


def safe_name(video_id: str) -> str:
    """A video id as a file/folder name (ids come from file names; path separators are refused)."""
    if not video_id or "/" in video_id or "\\" in video_id or video_id in (".", ".."):
        raise ValueError(f"video id {video_id!r} cannot be used as a file name")
    return video_id


@contextlib.contextmanager
def collect_errors(problems: list, fmt: str, video_id: str):
    """Turn an exception while exporting one video into a message, so the others still run."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the export of the rest
        logger.error("%s export of video %r failed: %s", fmt, video_id, exc)
        problems.append(f"{fmt}: video {video_id!r}: {exc}")


def raise_problems(problems: list, fmt: str, path: str) -> None:
    """Raise one ``ExportError`` listing ``problems`` (after ``path`` was written), if any."""
    if problems:
        raise ExportError(f"{fmt} export: {len(problems)} problem(s):\n  " + "\n  ".join(problems), {fmt: path})


def iter_videos(output_dir: str, video_ids, problems: list, fmt: str) -> Iterator[VideoMasks]:
    """Load the videos one at a time; a video that cannot be read becomes a problem message."""
    refs, listed = list_videos(output_dir, video_ids)
    problems.extend(f"{fmt}: {p}" for p in listed)
    for ref in refs:
        vm = None
        with collect_errors(problems, fmt, ref.video_id):
            safe_name(ref.video_id)
            vm = load_video(ref)
        if vm is not None:
            yield vm


def write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def export_all(output_dir: str, formats: Sequence[str], video_ids: Optional[Sequence[str]] = None,
               davis_remap: bool = False) -> dict[str, str]:
    """Write each format in ``formats``; returns ``{format: path}`` (folder, or file for ytvis).

    Every format and every video is attempted; problems are raised together at the end as one
    ``ExportError`` (after everything else was written).
    """
    from hqseg_ray.export import coco, davis, overlay, ytvis

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    writers = {"coco": coco.export_coco, "ytvis": ytvis.export_ytvis, "overlay": overlay.export_overlay,
               "davis": lambda o, v: davis.export_davis(o, v, remap=davis_remap)}
    paths, errors = {}, []
    for fmt in dict.fromkeys(formats):
        try:
            paths[fmt] = writers[fmt](output_dir, video_ids)
        except ExportError as exc:
            paths[fmt] = exc.paths.get(fmt)
            errors.append(str(exc))
    if errors:
        raise ExportError("\n".join(errors), paths)
    return paths


class ExportCommand:
    """``hqseg export OUTPUT --format coco|ytvis|davis|overlay [--format ...] [--video ID ...]``."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("output", help="output folder of a labeling job (holds masks/ and videos.parquet)")
        p.add_argument("--format", dest="formats", action="append", required=True, metavar="FORMAT",
                       help=f"one of {', '.join(FORMATS)} (repeatable, or comma-separated)")
        p.add_argument("--video", dest="videos", action="append", default=None, metavar="ID",
                       help="export only this video id (repeatable; default: every video with status ok)")
        p.add_argument("--davis-remap", action="store_true",
                       help="DAVIS: renumber object ids 1..K per video (writes ids.json) instead of failing "
                            "on ids outside 1..255")

    def run(self, args: argparse.Namespace) -> int:
        formats = [f.strip() for arg in args.formats for f in arg.split(",") if f.strip()]
        try:
            paths, failed = export_all(args.output, formats, args.videos, davis_remap=args.davis_remap), None
        except ExportError as exc:
            paths, failed = exc.paths, exc
        for fmt, path in paths.items():
            if path:
                print(f"{fmt:8s} {path}")
        if failed is not None:
            print(f"hqseg export: {failed}", file=sys.stderr)
            return 1
        return 0
