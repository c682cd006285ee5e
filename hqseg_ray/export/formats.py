"""Exports from the Parquet output: COCO, YouTube-VIS, DAVIS PNGs, overlays, CVAT, Label Studio.

Everything here reads ``OUTPUT/masks/video_id=<id>/*.parquet`` (one row per frame and object, see
``docs/formats.md``) and ``OUTPUT/videos.parquet`` (one status row per video), one video at a
time: memory holds one video's rows (RLE strings, not masks) and the masks of one frame. OUTPUT
is any location :mod:`hqseg_ray.storage` reaches (local, ``file://``, ``s3://``, ``gs://``,
fsspec); every file is read and written through it, atomically.

    export_all("out", ["coco", "davis"])            # or: hqseg export out --format coco --format davis

Layout written under OUTPUT::

    exports/coco/<video_id>.json         COCO instances, one file per video (compressed RLE)
    exports/ytvis/instances.json         YouTube-VIS, one file for all exported videos
    exports/coco-merged/instances.json   COCO, all exported videos, ids unique across them
    exports/davis/<video_id>/00000.png   palette PNG per labelled frame, pixel value = object id
    overlay/<video_id>.mp4, .png         H.264 overlay video and a one-frame preview
    exports/cvat/<video_id>.xml, .coco.json   CVAT for video 1.1 tracks; COCO with CVAT frame names
    exports/labelstudio/<video_id>.json  Label Studio tasks, brush masks per labelled frame
    review/<video_id>.json, exports/review/tasks.{json,csv}   the review queue and its task list
"""

from __future__ import annotations

import contextlib
import json
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

FORMATS = ("coco", "coco-merged", "ytvis", "davis", "overlay", "cvat", "labelstudio", "review")

MASK_COLUMNS = ("frame_index", "pts_time", "object_id", "score", "rle_counts", "rle_size",
                "bbox_xywh", "area", "source", "chunk_index", "label")
OPTIONAL_COLUMNS = ("chunk_index", "label")  # absent from files of schema version 1 (label) or foreign ones
DEFAULT_CATEGORY = "object"  # the category of objects without a label


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
        label: category name, None when the object has none.
    """

    object_id: int
    score: float
    rle: dict
    bbox_xywh: list
    area: int
    source: str
    label: Optional[str] = None

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
        num_frames: frames of the video: the source's probed frame count (at least the last
            masked frame + 1); when the source cannot be probed, the larger of the status row's
            ``frames`` (frames with results) and the last masked frame + 1, with a warning.
        height, width: mask size (``rle_size``), else the probed frame size.
        stride: the job's ``chunking.stride`` (masks file metadata; 1 when unknown): only frames
            ``t % stride == 0`` were labelled, the others were never looked at.
        labels: ``{object_id: label}`` of the objects that have one.
    """

    def __init__(self, ref: VideoRef, table, meta: Optional[dict] = None) -> None:
        self.video_id, self.uri = ref.video_id, ref.uri
        self._info = None
        meta = meta or {}
        self.stride = max(1, int(meta.get("stride") or 1))
        table = table.sort_by([("frame_index", "ascending"), ("object_id", "ascending")])
        self._fi = np.asarray(table.column("frame_index").to_numpy(), dtype=np.int64)
        self._cols = {c: (table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows)
                      for c in MASK_COLUMNS if c != "frame_index"}
        self.labels = {int(o): lab for o, lab in zip(self._cols["object_id"], self._cols["label"]) if lab}
        if self.stride > 1 and np.any(self._fi % self.stride):
            logger.warning("video %r: masks on frames off the stride-%d grid; exporting every frame",
                           self.video_id, self.stride)
            self.stride = 1
        sizes = {tuple(s) for s in self._cols["rle_size"]}
        if len(sizes) > 1:
            raise ValueError(f"video {self.video_id!r}: masks of different sizes {sorted(sizes)}")
        self.height, self.width = (int(v) for v in sizes.pop()) if sizes else (0, 0)
        last = int(self._fi[-1]) + 1 if len(self._fi) else 0
        try:
            info = self.probe()
        except Exception as exc:  # noqa: BLE001 - the masks alone still make an export
            if not self.height:
                raise ValueError(f"video {self.video_id!r} has no masks and its source cannot be read: {exc}") from exc
            logger.warning("video %r: source not readable (%s); frame count taken from the masks, trailing "
                           "frames without masks may be missing from the export", self.video_id, exc)
            self.num_frames = max(int(meta.get("num_frames") or ref.frames or 0), last)
            return
        self.num_frames = max(info.num_frames, last)
        if not self.height:
            self.height, self.width = info.height, info.width

    def probe(self):
        """The source video's ``VideoInfo``, probed once (raises when the source is unknown or unreadable)."""
        from hqseg_ray.video import probe_video

        if not self.uri:
            raise ValueError(f"video {self.video_id!r}: no source video in videos.parquet to read")
        if self._info is None:
            self._info = probe_video(self.uri)
        return self._info

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
                                  [float(v) for v in c["bbox_xywh"][i]], int(c["area"][i]), str(c["source"][i]),
                                  c["label"][i] or None))
        return out

    def frames(self) -> Iterator[tuple[int, list[ObjectMask]]]:
        """``(frame_index, masks)`` for every frame ``0 .. num_frames - 1`` (empty lists included)."""
        for t in range(self.num_frames):
            yield t, self.at(t)

    def labelled(self) -> Iterator[tuple[int, list[ObjectMask]]]:
        """:meth:`frames` restricted to the labelled frames (``t % stride == 0``): the only frames an
        export may call empty; with stride 1, every frame."""
        for t in range(0, self.num_frames, self.stride):
            yield t, self.at(t)

    def category(self, object_id: int) -> str:
        """The object's category name (its label, else ``"object"``)."""
        return self.labels.get(int(object_id)) or DEFAULT_CATEGORY

    def review(self, **kwargs) -> dict:
        """This video's review queue (:func:`hqseg_ray.export.review.build_review`)."""
        from hqseg_ray.export.review import build_review

        cols = dict(self._cols, frame_index=self._fi.tolist())
        return build_review(cols, self.video_id, self.num_frames, self.stride, video=self.uri, **kwargs)

    def busiest_frame(self) -> int:
        """Index of the first frame with the most non-empty masks (0 when there are none)."""
        area = np.asarray(self._cols["area"], dtype=np.int64)
        fi = self._fi[area > 0]
        if fi.size == 0:
            return 0
        counts = np.bincount(fi)
        return int(np.argmax(counts))


def list_videos(output_dir: str, video_ids: Optional[Sequence[str]] = None) -> tuple[list[VideoRef], list[str]]:
    """Videos to export: status ``ok`` rows of ``videos.parquet`` plus masks folders with no row
    (their source video is taken from the Parquet file's metadata, as ``hqseg segment`` writes it).

    Returns ``(refs, problems)``: a requested video that failed in the job or is unknown is a
    problem (a message), not an exception, so that the other videos are still exported.
    """
    from hqseg_ray.storage import open_store

    store = open_store(output_dir)
    dirs = {}
    for e in store.list("masks"):
        if e.name.startswith("video_id=") and e.is_dir:
            dirs[urllib.parse.unquote(e.name[len("video_id="):])] = store.url(f"masks/{e.name}")
    statuses = {}
    if store.exists("videos.parquet"):
        statuses = {r["video_id"]: r for r in store.read_table("videos.parquet").to_pylist()}
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
        elif row is not None:
            refs.append(VideoRef(vid, row.get("video"), row.get("frames"), dirs.get(vid)))
        else:  # masks without a status row (``hqseg segment``, a killed driver): the file's metadata
            meta = _file_meta(dirs[vid])
            refs.append(VideoRef(vid, meta.get("video"), (meta.get("status") or {}).get("frames"), dirs[vid]))
    return refs, problems


def _mask_files(mask_dir: str) -> list[str]:
    """The Parquet files of a masks folder (temporary and hidden files skipped)."""
    from hqseg_ray.storage import open_store

    store = open_store(mask_dir)
    return [store.url(e.name) for e in store.list()
            if not e.is_dir and e.name.endswith(".parquet") and not e.name.startswith((".", "_")) and ".tmp" not in e.name]


def _file_meta(mask_dir: str) -> dict:
    from hqseg_ray.export.parquet import read_video_meta

    files = _mask_files(mask_dir)
    return read_video_meta(files[0]) if files else {}


def load_video(ref: VideoRef) -> VideoMasks:
    """Read one video's rows (every ``*.parquet`` in its folder; temporary files are skipped)."""
    import pyarrow as pa

    from hqseg_ray.storage import split_uri

    from hqseg_ray.export.parquet import read_video_meta

    files = _mask_files(ref.mask_dir) if ref.mask_dir else []
    tables = []
    for store, name in map(split_uri, files):
        names = set(store.read_schema(name).names)
        tables.append(store.read_table(name, columns=[c for c in MASK_COLUMNS if c in names or c not in OPTIONAL_COLUMNS]))
    table = pa.concat_tables(tables, promote_options="permissive") if tables else _empty_table()
    return VideoMasks(ref, table, read_video_meta(files[0]) if files else None)


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
def collect_errors(problems: list, prefix: str):
    """Turn an exception inside the block into a message ``"<prefix>: <error>"`` in ``problems``."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the export of the rest
        logger.error("%s: %s", prefix, exc)
        problems.append(f"{prefix}: {exc}")


class StreamedJson:
    """One JSON object whose long lists (``keys``) are written item by item to local scratch files
    and assembled once at the end, so memory holds one video whatever the number of videos; the
    result is then copied to ``path`` (any location hqseg_ray.storage reaches) atomically."""

    def __init__(self, keys: Sequence[str], prefix: str) -> None:
        import os
        import tempfile

        self.keys = tuple(keys)
        self.counts = dict.fromkeys(self.keys, 0)
        self._tmp = tempfile.mkdtemp(prefix=prefix)
        self._files = {k: open(os.path.join(self._tmp, f"{k}.json"), "w") for k in self.keys}

    def extend(self, key: str, items: Sequence[dict]) -> None:
        """Append ``items`` to the list ``key`` (all encoded before anything is written)."""
        text = [json.dumps(x, separators=(",", ":")) for x in items]
        if text:
            self._files[key].write(("," if self.counts[key] else "") + ",".join(text))
            self.counts[key] += len(text)

    def finish(self, head: dict, path: str) -> str:
        """``head`` (a non-empty object) with the lists appended, written to ``path``; returns it."""
        import os
        import shutil

        for f in self._files.values():
            f.close()
        tmp = os.path.join(self._tmp, "assembled.json")
        with open(tmp, "w") as out:
            out.write(json.dumps(head, separators=(",", ":"))[:-1])
            for k in self.keys:
                out.write(f',"{k}":[')
                with open(os.path.join(self._tmp, f"{k}.json")) as src:
                    shutil.copyfileobj(src, out)
                out.write("]")
            out.write("}")
        from hqseg_ray.export.io import upload_atomic

        upload_atomic(path, tmp)
        self.discard()
        return path

    def discard(self) -> None:
        import shutil

        for f in self._files.values():
            f.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


class FormatWriter:
    """One export format: ``open`` once (creates folders), ``add`` once per video, ``close`` once at
    the end (returns the path to report); ``discard`` removes temporary files when interrupted."""

    fmt = ""
    folder = ""
    #: True for formats that name the output's categories; ``run_writers`` then sets ``categories``
    #: (computed once per export run) before ``open``.
    needs_categories = False
    categories = None

    def open(self) -> None:
        from hqseg_ray.storage import open_store

        open_store(self.folder).makedirs()
        if self.needs_categories and self.categories is None:  # used alone, without run_writers
            from hqseg_ray.export.categories import Categories

            self.categories = Categories.of_output(self.output_dir)

    def add(self, vm: VideoMasks) -> None:
        raise NotImplementedError

    def close(self) -> str:
        raise NotImplementedError

    def discard(self) -> None:
        pass


def run_writers(output_dir: str, writers: Sequence[FormatWriter],
                video_ids: Optional[Sequence[str]] = None) -> dict[str, str]:
    """Read each video once and hand it to every writer; returns ``{format: path}``.

    A video that fails in one format is a problem of that format only; every problem is raised
    together at the end as one ``ExportError`` (its ``paths`` says what was written).
    """
    refs, problems = list_videos(output_dir, video_ids)
    try:
        categories = None  # read once per run, and only if some writer needs it
        for w in writers:
            if w.needs_categories:
                if categories is None:
                    from hqseg_ray.export.categories import Categories

                    categories = Categories.of_output(output_dir)
                w.categories = categories
            w.open()
        for i, ref in enumerate(refs):
            vm = None
            with collect_errors(problems, f"video {ref.video_id!r}"):
                safe_name(ref.video_id)
                vm = load_video(ref)
            for w in writers if vm is not None else ():
                with collect_errors(problems, f"{w.fmt}: video {ref.video_id!r}"):
                    w.add(vm)
            if vm is not None:
                logger.info("export [%d/%d] %r: %d frames, %d objects", i + 1, len(refs), ref.video_id,
                            vm.num_frames, len(vm.object_ids))
            del vm  # one video in memory at a time
        paths = {w.fmt: w.close() for w in writers}
    except BaseException:
        for w in writers:
            w.discard()
        raise
    if problems:
        raise ExportError(f"{len(problems)} export problem(s):\n  " + "\n  ".join(problems), paths)
    return paths


def make_writers(output_dir: str, formats: Sequence[str], davis_remap: bool = False,
                 options: Optional[dict] = None) -> list[FormatWriter]:
    """Writers for ``formats`` (duplicates ignored); raises ValueError for an unknown format.
    ``options``: ``{format: {keyword: value}}`` passed to that format's writer."""
    from hqseg_ray.export.coco import CocoMergedWriter, CocoWriter
    from hqseg_ray.export.cvat import CvatWriter
    from hqseg_ray.export.davis import DavisWriter
    from hqseg_ray.export.labelstudio import LabelStudioWriter
    from hqseg_ray.export.overlay import OverlayWriter
    from hqseg_ray.export.review import ReviewWriter
    from hqseg_ray.export.ytvis import YtvisWriter

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    make = {"coco": CocoWriter, "coco-merged": CocoMergedWriter, "ytvis": YtvisWriter, "overlay": OverlayWriter,
            "davis": lambda out, **kw: DavisWriter(out, remap=davis_remap, **kw), "cvat": CvatWriter,
            "labelstudio": LabelStudioWriter, "review": ReviewWriter}
    return [make[f](output_dir, **(options or {}).get(f, {})) for f in dict.fromkeys(formats)]


def export_all(output_dir: str, formats: Sequence[str], video_ids: Optional[Sequence[str]] = None,
               davis_remap: bool = False, options: Optional[dict] = None) -> dict[str, str]:
    """Write each format in ``formats`` in one pass over the videos; returns ``{format: path}``
    (a folder; for ``ytvis`` and ``coco-merged`` the JSON file).

    Args:
        output_dir: a labeling job's ``output.path`` (``masks/`` and ``videos.parquet``).
        formats: any of :data:`FORMATS` (see docs/formats.md, "Exports").
        video_ids: only these videos (default: every video with status ok, and masks folders
            without a status row).
        davis_remap: DAVIS: renumber object ids 1..K instead of failing on ids outside 1..255.
        options: per-format writer options, e.g. ``{"labelstudio": {"image_root": "/data/..."}}``.

    Raises:
        ExportError: after everything else was written, listing every video that failed (a
            requested video that is unknown or failed in the job counts).
    """
    return run_writers(output_dir, make_writers(output_dir, formats, davis_remap, options), video_ids)


def __getattr__(name):  # ``hqseg_ray.export.formats:ExportCommand`` moved to export/command.py
    if name == "ExportCommand":
        from hqseg_ray.export.command import ExportCommand

        return ExportCommand
    raise AttributeError(name)
