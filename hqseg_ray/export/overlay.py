"""Overlay videos for people: ``OUTPUT/overlay/<video_id>.mp4`` plus a ``.png`` preview.

The source video (``video`` column of ``videos.parquet``) is decoded frame by frame at its own size
and every non-empty mask is drawn on it (tint, contour, ``id:score``) by
:func:`hqseg_ray.video.render_overlay`, higher scores drawn last; the MP4 is H.264 at the source's
frame rate (:func:`hqseg_ray.video.write_overlay_video`). The PNG is the first frame with the most
objects. Masks whose size differs from the frame's are resized (nearest) to it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterator, Optional, Sequence

import numpy as np

from hqseg_ray.export.formats import FormatWriter, VideoMasks, run_writers, safe_name
from hqseg_ray.export.io import upload_atomic


def _masks_for(vm: VideoMasks, frame_index: int, height: int, width: int) -> tuple[dict, dict]:
    """``({object_id: [H, W] bool}, {object_id: score})`` of one frame, lowest score first."""
    import cv2

    masks, scores = {}, {}
    for o in sorted(vm.at(frame_index), key=lambda o: (o.score, o.object_id)):
        m = o.mask()
        if m.shape != (height, width):
            m = cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
        masks[o.object_id], scores[o.object_id] = m, o.score
    return masks, scores


def write_overlay(vm: VideoMasks, mp4_path: str, png_path: Optional[str] = None) -> int:
    """Render one video's overlay MP4 (and preview PNG) to paths or URIs; returns the number of
    frames written. The encoder writes into a local scratch folder; the finished files are then
    copied to the output atomically (hqseg_ray.storage)."""
    tmp = tempfile.mkdtemp(prefix="hqseg-overlay-")
    try:
        local_png = os.path.join(tmp, "preview.png") if png_path else None
        n = _render_overlay(vm, os.path.join(tmp, "overlay.mp4"), local_png)
        upload_atomic(mp4_path, os.path.join(tmp, "overlay.mp4"))
        if png_path and os.path.exists(local_png):
            upload_atomic(png_path, local_png)
        return n
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _render_overlay(vm: VideoMasks, mp4_path: str, png_path: Optional[str] = None) -> int:
    from hqseg_ray.video import iter_frames, render_overlay, write_overlay_png, write_overlay_video

    info = vm.probe()
    preview = vm.busiest_frame()

    def rendered() -> Iterator[np.ndarray]:
        for frame, t, _ in iter_frames(vm.uri, info=info):
            masks, scores = _masks_for(vm, t, frame.shape[0], frame.shape[1])
            img = render_overlay(frame, masks, scores)
            if png_path and t == preview:
                write_overlay_png(png_path, img)
            yield img

    n = write_overlay_video(mp4_path, rendered(), info.fps)
    if n < vm.num_frames:
        raise ValueError(f"the source {vm.uri!r} gave {n} frames, the masks cover {vm.num_frames}")
    return n


class OverlayWriter(FormatWriter):
    """Writes ``overlay/<video_id>.mp4`` and ``.png`` per video."""

    fmt = "overlay"

    def __init__(self, output_dir: str) -> None:
        self.folder = os.path.join(output_dir, "overlay")

    def add(self, vm: VideoMasks) -> None:
        name = os.path.join(self.folder, safe_name(vm.video_id))
        write_overlay(vm, f"{name}.mp4", f"{name}.png")

    def close(self) -> str:
        return self.folder


def export_overlay(output_dir: str, video_ids: Optional[Sequence[str]] = None) -> str:
    """Write ``overlay/<video_id>.mp4`` and ``.png`` for each video; returns ``overlay``."""
    return run_writers(output_dir, [OverlayWriter(output_dir)], video_ids)["overlay"]
