"""Frame-exact reading of a frame range ``[start, stop)``.

A frame's index is its position in presentation order: the rank of its pts among all pts the
probe saw (``VideoInfo.pts``). To read ``[start, stop)`` the reader seeks to the codec keyframe at
or before ``start`` (by that keyframe's pts), decodes forward, identifies each decoded frame by its
pts, drops frames before ``start`` and stops after ``stop - 1``. If a seek lands after ``start`` (a
demuxer whose index disagrees) it retries from the previous keyframe, then from the beginning.
"""

from __future__ import annotations

import bisect
import logging
from typing import Any, Iterator, Optional

import numpy as np

from .probe import VideoInfo, decode_image, probe_video
from .source import VideoError, open_container, read_bytes

log = logging.getLogger(__name__)

Frame = tuple[np.ndarray, int, float]  # ([H, W, 3] uint8 RGB, frame index, pts time in seconds)


def rotate(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a clockwise display rotation (0/90/180/270) to an ``[H, W, C]`` array."""
    if rotation == 0:
        return frame
    return np.ascontiguousarray(np.rot90(frame, k={90: -1, 180: 2, 270: 1}[rotation]))


def resize_long_side(frame: np.ndarray, size: Optional[int]) -> np.ndarray:
    """Resize ``[H, W, 3]`` so that ``max(H, W) == size`` (aspect kept, cv2.INTER_AREA)."""
    if not size:
        return frame
    import cv2

    h, w = frame.shape[:2]
    if max(h, w) == size:
        return frame
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)


def iter_frames(
    uri: str,
    start: int = 0,
    stop: Optional[int] = None,
    stride: int = 1,
    size: Optional[int] = None,
    info: Optional[VideoInfo] = None,
    stats: Optional[dict] = None,
    allow_partial: bool = False,
    filesystem: Any = None,
) -> Iterator[Frame]:
    """Yield ``(frame, frame_index, pts_time)`` for frames ``start, start+stride, ... < stop``.

    Memory is bounded by one decoded frame plus the decoder's own buffers.

    Args:
        uri: video file, frame folder or image (as for :func:`probe_video`).
        start, stop: frame range, stop exclusive; ``stop=None`` reads to the end.
        stride: keep every ``stride``-th frame counted from ``start``.
        size: resize so that the long side has this many pixels (aspect kept); None keeps size.
        info: the probe result; pass it to avoid probing again (probing demuxes the whole file).
        stats: optional dict, filled in place: ``decoded`` (frames the decoder produced, including
            those dropped before ``start``), ``returned``, ``seek_frame`` (index of the keyframe
            decoding started from), ``errors`` (decoder messages), ``missing`` (indices wanted but
            not decoded), ``truncated`` (the probe found a cut-off file).
        allow_partial: when frames of the range fail to decode, log a warning and list them in
            ``stats["missing"]`` instead of raising.

    Yields:
        ``frame`` uint8 ``[H, W, 3]`` RGB (rotation applied, then resize), ``frame_index`` int,
        ``pts_time`` float seconds (absolute stream time; ``index / fps`` for folders).

    Raises:
        VideoError: bad range, unreadable input, or frames missing (unless ``allow_partial``).
    """
    info = info if info is not None else probe_video(uri, filesystem)
    stop = info.num_frames if stop is None else stop
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not (0 <= start <= stop <= info.num_frames):
        raise VideoError(uri, f"frame range [{start}, {stop}) is outside the video's "
                              f"{info.num_frames} frames")
    st = stats if stats is not None else {}
    st.update(decoded=0, returned=0, seek_frame=start, errors=[], missing=[], truncated=info.truncated)
    if start == stop:
        return
    if info.kind in ("frames", "image"):
        yield from _iter_images(info, start, stop, stride, size, st, filesystem)
        return
    wanted = set(range(start, stop, stride))
    for frame, idx, t in _iter_video(uri, info, start, stop, st, filesystem):
        if idx in wanted:
            wanted.discard(idx)
            st["returned"] += 1
            rgb = frame.to_ndarray(format="rgb24")  # swscale: any pix_fmt (10-bit, gray) -> uint8 RGB
            yield resize_long_side(rotate(rgb, info.rotation), size), idx, t
    if wanted:
        st["missing"] = sorted(wanted)
        msg = (f"{len(wanted)} frame(s) of [{start}, {stop}) did not decode (first: {min(wanted)})"
               + (f"; decoder said: {st['errors'][0]}" if st["errors"] else ""))
        if not allow_partial:
            raise VideoError(uri, msg)
        log.warning("video %r: %s", uri, msg)


def read_frames(
    uri: str,
    start: int = 0,
    stop: Optional[int] = None,
    stride: int = 1,
    size: Optional[int] = None,
    info: Optional[VideoInfo] = None,
    stats: Optional[dict] = None,
    allow_partial: bool = False,
    filesystem: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read frames ``[start, stop)`` (every ``stride``-th) into arrays.

    Returns:
        ``frames`` uint8 ``[N, H, W, 3]`` RGB, ``frame_indices`` int64 ``[N]``, ``pts_times``
        float64 ``[N]`` seconds. Arguments as for :func:`iter_frames`.
    """
    info = info if info is not None else probe_video(uri, filesystem)
    stop_ = info.num_frames if stop is None else stop
    n = len(range(start, stop_, stride)) if stride >= 1 else 0
    frames: Optional[np.ndarray] = None
    indices = np.zeros((n,), np.int64)
    times = np.zeros((n,), np.float64)
    k = 0
    for f, i, t in iter_frames(uri, start, stop, stride, size, info, stats, allow_partial, filesystem):
        if frames is None:  # allocated once the (possibly resized) frame size is known
            frames = np.empty((n,) + f.shape, np.uint8)
        frames[k], indices[k], times[k] = f, i, t
        k += 1
    if frames is None:
        h, w = (info.height, info.width) if not size else resize_long_side(
            np.zeros((info.height, info.width, 3), np.uint8), size).shape[:2]
        frames = np.zeros((0, h, w, 3), np.uint8)
    return frames[:k], indices[:k], times[:k]


def _iter_images(info: VideoInfo, start: int, stop: int, stride: int, size: Optional[int],
                 st: dict, filesystem: Any) -> Iterator[Frame]:
    files = info.frame_files or [info.uri]
    for idx in range(start, stop, stride):
        img = decode_image(files[idx], read_bytes(files[idx], filesystem))
        if img.shape[:2] != (info.height, info.width):
            raise VideoError(info.uri, f"frame {idx} ({files[idx]}) is {img.shape[1]}x{img.shape[0]}, "
                                       f"the first frame is {info.width}x{info.height}")
        st["decoded"] += 1
        st["returned"] += 1
        yield resize_long_side(img, size), idx, info.pts_time(idx)


def _iter_video(uri: str, info: VideoInfo, start: int, stop: int, st: dict,
                filesystem: Any) -> Iterator[tuple[np.ndarray, int, float]]:
    """Decoded frames with index in ``[start, stop)`` as ``(av.VideoFrame, index, pts_time)``, in
    presentation order."""
    import av

    pts = info.pts
    kf = info.keyframes
    # keyframe at or before start; without pts we cannot seek, so decode from the beginning
    k = bisect.bisect_right(kf, start) - 1 if pts is not None else -1
    attempts = 0
    while True:
        seek_frame = kf[k] if k >= 0 else 0
        st["seek_frame"] = seek_frame
        container, close = open_container(uri, filesystem)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if k > 0:
                container.seek(pts[seek_frame], stream=stream, backward=True, any_frame=False)
            overshoot = False
            next_idx = 0  # used only when frames carry no pts (decode order numbering)
            for frame in _decode(container, stream, st):
                idx = _index_of(frame.pts, pts) if pts is not None else next_idx
                next_idx += 1
                if idx is None:
                    continue  # a frame the probe did not count (e.g. past a truncation point)
                if st["decoded"] == 1 and idx > start and k > 0:
                    overshoot = True  # the seek landed after start: go back one keyframe
                    break
                if idx < start:
                    continue
                if idx >= stop:
                    break
                t = info.pts_time(idx) if pts is not None else info.start_time + idx / info.fps
                yield frame, idx, t
        except av.error.FFmpegError as exc:
            raise VideoError(uri, f"decoding failed ({exc})") from exc
        finally:
            close()
        if not overshoot:
            return
        attempts += 1
        log.debug("seek to frame %d of %r landed after frame %d; retrying", seek_frame, uri, start)
        st["decoded"] = 0
        k = k - 1 if attempts < 3 else -1


def _decode(container: Any, stream: Any, st: dict) -> Iterator[Any]:
    """Decode packets, recording (not raising) errors of single packets so that frames after a
    damaged one (and those the decoder still holds) come out."""
    import av

    for pkt in container.demux(stream):
        if pkt.is_corrupt:
            st["errors"].append(f"corrupt packet at byte {pkt.pos}")
            continue
        try:
            frames = pkt.decode()
        except av.error.InvalidDataError as exc:
            st["errors"].append(str(exc))
            continue
        for frame in frames:
            st["decoded"] += 1
            yield frame


def _index_of(pts: Optional[int], table: list[int]) -> Optional[int]:
    if pts is None:
        return None
    i = bisect.bisect_left(table, pts)
    return i if i < len(table) and table[i] == pts else None
