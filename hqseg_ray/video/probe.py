"""Probe a video, a frame folder or an image: frame count, timing, size, rotation, keyframes.

For container files the probe *demuxes* every packet of the video stream (no decoding, except the
first frame, which gives the display rotation and proves the stream decodes). That gives the exact
frame count even where the container does not store one, the presentation timestamps of every
frame (``pts``, sorted: frame ``i`` is the frame with the ``i``-th smallest pts, robust to B-frames
and variable frame rate) and the codec keyframes from packet flags.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from .source import IMAGE_EXTS, VideoError, file_kind, list_images, open_container, read_bytes

log = logging.getLogger(__name__)

DEFAULT_FOLDER_FPS = 30.0


@dataclass
class VideoInfo:
    """What the probe learnt about one input.

    Attributes:
        uri: the input as given (path, file://, s3://, gs://).
        kind: ``"video"`` (a container file), ``"frames"`` (a folder of images) or ``"image"``.
        num_frames: exact number of frames that can be read (after dropping a truncated tail).
        fps: average frame rate (frames/s); 30 for folders and images.
        time_base: seconds per pts tick of the video stream, or None for folders/images.
        duration: seconds, from the first frame's start to the last frame's end.
        width, height: size of the frames ``read_frames`` returns (after rotation, before resize).
        rotation: clockwise degrees (0/90/180/270) applied to decoded pictures for display.
        pix_fmt: decoded pixel format (e.g. ``yuv420p``, ``yuv420p10le``; ``rgb24`` for images).
        codec: codec name (``h264``, ``mpeg4``, ``vp9``, ...; ``jpeg``/``png`` for images).
        keyframes: sorted frame indices of codec keyframes (every frame for folders/images).
        pts: sorted presentation timestamps in ``time_base`` ticks, one per frame (video only).
        start_time: seconds of the first frame's pts (``pts_times`` are absolute stream times).
        truncated: True when the file ends before its container says it should; the readable
            prefix is what ``num_frames`` counts.
        warnings: human-readable notes (truncation, declared vs counted frames, ...).
        frame_files: image paths/URIs in order (folders and images only).
    """

    uri: str
    kind: str
    num_frames: int
    fps: float
    time_base: Optional[float]
    duration: float
    width: int
    height: int
    rotation: int = 0
    pix_fmt: str = ""
    codec: str = ""
    keyframes: list[int] = field(default_factory=list)
    pts: Optional[list[int]] = None
    start_time: float = 0.0
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)
    frame_files: Optional[list[str]] = None

    def to_dict(self, tables: bool = True) -> dict:
        """Plain dict (JSON / Arrow friendly). ``tables=False`` leaves out the per-frame lists."""
        d = asdict(self)
        if not tables:
            for k in ("keyframes", "pts", "frame_files"):
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VideoInfo":
        """Inverse of ``to_dict()``; needs the per-frame tables (frame numbering depends on them)."""
        if d.get("kind") == "video" and ("pts" not in d or "keyframes" not in d):
            raise ValueError(f"VideoInfo.from_dict({d.get('uri')!r}): the dict lacks 'pts'/'keyframes'; "
                             "use to_dict(tables=True) for a VideoInfo that will be read from")
        return cls(**d)

    def pts_time(self, index: int) -> float:
        """Presentation time in seconds of frame ``index``."""
        if self.pts is not None and self.time_base is not None:
            return float(self.pts[index]) * self.time_base
        return self.start_time + index / self.fps


def probe_video(uri: str, filesystem: Any = None) -> VideoInfo:
    """Probe a video file, a folder of JPEG/PNG frames or a single image.

    Args:
        uri: local path, ``file://``, ``s3://`` or ``gs://`` URI.
        filesystem: optional ``pyarrow.fs.FileSystem`` to use for remote URIs (endpoint, timeouts,
            credentials); default ``FileSystem.from_uri(uri)``.

    Raises:
        VideoError: naming the input and what is wrong with it.
    """
    uri = str(uri)
    kind = file_kind(uri, filesystem)
    if kind == "missing":
        raise VideoError(uri, "does not exist")
    if kind == "dir":
        return _probe_folder(uri, filesystem)
    if uri.lower().endswith(IMAGE_EXTS):
        return _probe_images(uri, [uri], "image", filesystem)
    return _probe_container(uri, filesystem)


def decode_image(uri: str, data: bytes) -> np.ndarray:
    """Encoded image bytes -> ``[H, W, 3]`` uint8 RGB."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if arr is None:
        raise VideoError(uri, "is not a readable image (JPEG/PNG/...)")
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def _probe_folder(uri: str, filesystem: Any) -> VideoInfo:
    files = list_images(uri, filesystem)
    if not files:
        raise VideoError(uri, f"is a folder without images ({', '.join(IMAGE_EXTS)})")
    return _probe_images(uri, files, "frames", filesystem)


def _probe_images(uri: str, files: list[str], kind: str, filesystem: Any) -> VideoInfo:
    first = decode_image(files[0], read_bytes(files[0], filesystem))
    h, w = first.shape[:2]
    n = len(files)
    ext = files[0].rsplit(".", 1)[-1].lower()
    return VideoInfo(uri=uri, kind=kind, num_frames=n, fps=DEFAULT_FOLDER_FPS, time_base=None,
                     duration=n / DEFAULT_FOLDER_FPS, width=w, height=h, rotation=0, pix_fmt="rgb24",
                     codec="jpeg" if ext in ("jpg", "jpeg") else ext, keyframes=list(range(n)),
                     pts=None, start_time=0.0, frame_files=files)


def _rotation_of(frame: Any, stream: Any) -> int:
    """Clockwise display rotation: the display matrix (PyAV gives it counter-clockwise), else the
    legacy ``rotate`` tag."""
    deg = 0
    try:
        deg = -int(round(frame.rotation))
    except Exception:  # older PyAV without VideoFrame.rotation
        deg = 0
    if deg == 0:
        try:
            deg = int(float(stream.metadata.get("rotate", 0)))
        except ValueError:
            deg = 0
    deg %= 360
    if deg not in (0, 90, 180, 270):
        log.warning("rotation of %s degrees is not a multiple of 90; ignored", deg)
        deg = 0
    return deg


def _probe_container(uri: str, filesystem: Any) -> VideoInfo:
    container, close = open_container(uri, filesystem)
    try:
        if not container.streams.video:
            others = ", ".join(f"{s.type}" for s in container.streams) or "no streams"
            raise VideoError(uri, f"has no video stream (it has: {others})")
        stream = container.streams.video[0]
        tb = stream.time_base
        declared = int(stream.frames or 0)
        # demux every packet (no decoding) for pts, dts and keyframe flags; decode only until the
        # first frame comes out: rotation, real size and pixel format, and proof the stream decodes
        rows, warnings, cut, first = _demux_all(uri, container, stream)
        if first is None:
            why = "; ".join(warnings + ([cut] if cut else [])) or "no frame came out of the decoder"
            raise VideoError(uri, f"has a video stream without any decodable frame ({why})")
        rotation = _rotation_of(first, stream)
        pix_fmt, cw, ch = first.format.name, first.width, first.height
        if not rows:
            raise VideoError(uri, "has no intact video packets (truncated or corrupt)")
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
        time_base = float(tb) if tb else None
        pts_known = all(r[0] is not None for r in rows) and bool(time_base)
        if not pts_known:
            # e.g. raw .h264 streams: frames are numbered in the order the decoder outputs them
            # (presentation order); read_frames decodes such inputs from the start
            warnings.append("packets carry no pts; frames are numbered in decode order")
        elif len({r[0] for r in rows}) != len(rows):
            pts_known = False  # a pts cannot identify a frame when two frames share it
            warnings.append("several packets share a pts; frames are numbered in decode order")
        # truncation: a cut packet or demux error, fewer frames or less time than declared
        truncated = cut is not None
        if cut:
            warnings.append(cut)
        declared_s = (float(stream.duration * tb) if stream.duration else
                      container.duration / 1e6 if container.duration else None)
        if declared and declared > len(rows):
            truncated = True
            warnings.append(f"container declares {declared} frames but only {len(rows)} are intact")
        elif pts_known and declared_s and fps and container.format.name.startswith(("matroska", "mov")):
            end_s = _span(rows, time_base, fps)[1]
            if end_s + 2.0 / fps < declared_s:  # e.g. Matroska cut mid-file: no partial packet seen
                truncated = True
                warnings.append(f"container declares {declared_s:.3f} s but the frames end at {end_s:.3f} s")
        if truncated and pts_known:
            rows = _contiguous_prefix(rows)
        n = len(rows)
        if pts_known:
            order = sorted(range(n), key=lambda i: rows[i][0])
            pts = [int(rows[i][0]) for i in order]
            rank = {i: r for r, i in enumerate(order)}
            keyframes = sorted(rank[i] for i in range(n) if rows[i][2])
            start, span = _span(rows, time_base, fps)
            fps = fps or (n / span if span > 0 else 0.0)
        else:
            pts = None
            keyframes = [i for i in range(n) if rows[i][2]]
            start, span = 0.0, (n / fps if fps else 0.0)
        if truncated:
            log.warning("video %r is truncated: %s; %d readable frames", uri, "; ".join(warnings), n)
        w, h = (ch, cw) if rotation in (90, 270) else (cw, ch)
        return VideoInfo(uri=uri, kind="video", num_frames=n, fps=fps or DEFAULT_FOLDER_FPS,
                         time_base=time_base, duration=span, width=w, height=h, rotation=rotation,
                         pix_fmt=pix_fmt, codec=stream.codec_context.name, keyframes=keyframes,
                         pts=pts, start_time=start, truncated=truncated, warnings=warnings)
    except VideoError:
        raise
    except Exception as exc:
        raise VideoError(uri, f"probe failed ({type(exc).__name__}: {exc})") from exc
    finally:
        close()


def _demux_all(uri: str, container: Any, stream: Any) -> tuple[list, list[str], Optional[str], Any]:
    """Rows ``(pts, dts, is_keyframe, duration)`` of intact packets in decode order, warnings,
    a note when the stream was cut short (demux error or a partial packet), and the first
    decoded frame (None when nothing decoded)."""
    import av

    rows: list = []
    warnings: list[str] = []
    cut = None
    first = None
    decode_error = None
    failures = 0
    try:
        for pkt in container.demux(stream):
            if first is None and failures < 8:  # e.g. leading frames of an open GOP may not decode
                try:
                    out = pkt.decode()  # the flush packet at the end drains the decoder
                    first = out[0] if out else None
                except av.error.FFmpegError as exc:
                    decode_error, failures = exc, failures + 1
            if pkt.size == 0 or pkt.is_discard:
                continue  # flush packets; packets an edit list hides
            if pkt.is_corrupt:
                cut = f"packet at byte {pkt.pos} is incomplete or corrupt (file truncated?)"
                break
            rows.append((pkt.pts, pkt.dts, bool(pkt.is_keyframe), pkt.duration))
    except av.error.FFmpegError as exc:
        cut = f"demuxing stopped after {len(rows)} packets: {exc}"
    if first is None and decode_error is not None:
        warnings.append(f"decoding failed: {decode_error}")
    return rows, warnings, cut, first


def _span(rows: list, time_base: float, fps: float) -> tuple[float, float]:
    """(start seconds, seconds from the first frame's start to the last frame's end)."""
    first = min(r[0] for r in rows)
    last = max(rows, key=lambda r: r[0])
    last_dur = last[3] or (1.0 / fps / time_base if fps else 0)
    return first * time_base, (last[0] - first + last_dur) * time_base


def _contiguous_prefix(rows: list) -> list:
    """Of a truncated stream, keep the frames shown up to the last intact packet's dts: every
    frame with pts <= that dts was necessarily decoded earlier, so none of them is missing (a
    B-frame cut off after its later reference would otherwise shift the frame numbering)."""
    dts = [r[1] for r in rows if r[1] is not None]
    if not dts:
        return rows
    limit = max(dts)
    kept = [r for r in rows if r[0] <= limit]
    return kept or rows
