"""Uploaded video bytes, opened only by the demuxers of ordinary video files.

FFmpeg picks a demuxer by sniffing the bytes (and the file name): an uploaded HLS playlist
(``.m3u8``) or ``ffconcat`` script is a demuxer too, and it opens the local files or URLs it names.
So a session's temp file has a fixed suffix (the client's file name is never used), and it is
first opened with FFmpeg's ``format_whitelist`` (checked after sniffing, before the demuxer reads
anything) and ``protocol_whitelist=file``. Once that open succeeded, the decoders of
``hqseg_ray.video`` open the same unchanged file; FFmpeg's sniffing is deterministic, so they get
the same whitelisted demuxer.

The header open also gives the frame size and (for most containers) the frame count, which are
checked against the limits before any frame is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

from hqseg_ray.serve.errors import ClientError

#: FFmpeg demuxer names a session may use (the MOV/MP4 family, Matroska/WebM, AVI, MPEG-TS, FLV, IVF).
VIDEO_DEMUXERS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mpegts", "flv", "ivf")
TEMP_SUFFIX = ".video"  # fixed: neither a playlist nor an image extension
_NAMES = "MP4/MOV, Matroska/WebM, AVI, MPEG-TS, FLV, IVF"


@dataclass(frozen=True)
class HeaderInfo:
    """What the container header says. ``frames``: declared or estimated from duration x rate
    (0 when the header does not say); ``width``/``height``: 0 when unknown."""

    demuxer: str
    width: int
    height: int
    frames: int


def open_header(path: str) -> HeaderInfo:
    """Open ``path`` with the whitelisted demuxers only and read its header (no frame decoded).

    Raises:
        ClientError: not one of the whitelisted containers, corrupt, or without a video stream.
    """
    import av

    try:
        container = av.open(path, "r", timeout=10.0, container_options={
            "format_whitelist": ",".join(VIDEO_DEMUXERS), "protocol_whitelist": "file"})
    except Exception as exc:  # av.error.* for refused or unreadable input
        raise ClientError(f"not a readable video: not a supported video container ({_NAMES}), or corrupt "
                          f"({type(exc).__name__}); playlists and concat scripts are refused") from None
    try:
        if not container.streams.video:
            raise ClientError("not a readable video: the file has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        frames = int(stream.frames or 0)
        if not frames:
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            seconds = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                       else container.duration / 1e6 if container.duration else 0.0)
            frames = int(seconds * rate + 0.5) if rate > 0 else 0
        return HeaderInfo(container.format.name, int(ctx.width or 0), int(ctx.height or 0), frames)
    finally:
        container.close()
