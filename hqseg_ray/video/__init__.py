"""Video input: probing, frame-exact chunk decoding, frame folders, chunk planning, overlays.

Inputs are container files (anything FFmpeg reads), folders of JPEG/PNG frames (natural order)
and single images, from a local path, ``file://``, ``s3://`` or ``gs://``.
"""

from .chunks import ChunkSpec, plan_chunks
from .overlay import object_color, render_overlay, write_overlay_png, write_overlay_video
from .probe import VideoInfo, probe_video
from .reader import iter_frames, read_frames
from .source import VideoError

__all__ = [
    "ChunkSpec", "VideoError", "VideoInfo", "iter_frames", "object_color", "plan_chunks",
    "probe_video", "read_frames", "render_overlay", "write_overlay_png", "write_overlay_video",
]
