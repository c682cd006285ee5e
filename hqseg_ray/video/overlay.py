"""Overlays for people to look at: masks tinted in a stable per-object colour, contour and id.

``render_overlay`` draws one frame; ``write_overlay_video`` encodes frames as H.264 MP4 (yuv420p,
plays everywhere); ``write_overlay_png`` writes a one-frame preview.
"""

from __future__ import annotations

import colorsys
import os
from typing import Iterable, Mapping, Optional

import numpy as np

_GOLDEN = 0.618033988749895


def object_color(object_id: int) -> tuple[int, int, int]:
    """Stable RGB colour of an object id (golden-ratio hue steps: neighbours differ clearly)."""
    h = (int(object_id) * _GOLDEN) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def render_overlay(
    frame: np.ndarray,
    masks_by_object: Mapping[int, np.ndarray],
    scores: Optional[Mapping[int, float]] = None,
    alpha: float = 0.45,
    labels: bool = True,
) -> np.ndarray:
    """Draw masks on a frame.

    Args:
        frame: ``[H, W, 3]`` uint8 RGB.
        masks_by_object: object id -> ``[H, W]`` bool mask.
        scores: optional object id -> score, printed next to the id.
        alpha: tint strength in [0, 1].
        labels: draw the id (and score) at the top of each mask.

    Returns:
        ``[H, W, 3]`` uint8 RGB (a new array).
    """
    import cv2

    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"render_overlay expects an [H, W, 3] uint8 frame, got {frame.dtype} {list(frame.shape)}")
    h, w = frame.shape[:2]
    out = frame.astype(np.float32)
    thick = max(1, min(h, w) // 200)
    contours = {}
    for oid, mask in masks_by_object.items():
        m = np.asarray(mask, dtype=bool)
        if m.shape != (h, w):
            raise ValueError(f"mask of object {oid} has shape {list(m.shape)}, the frame is {[h, w]}")
        out[m] = (1 - alpha) * out[m] + alpha * np.asarray(object_color(oid), np.float32)
        cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contours[oid] = (cs, m)
    img = np.ascontiguousarray(out.round().clip(0, 255).astype(np.uint8))
    scale = max(0.35, min(h, w) / 800)
    for oid, (cs, m) in contours.items():
        color = object_color(oid)
        cv2.drawContours(img, cs, -1, color, thick, lineType=cv2.LINE_AA)
        if labels and m.any():
            ys, xs = np.nonzero(m)
            text = str(oid) if not scores or oid not in scores else f"{oid}:{scores[oid]:.2f}"
            org = (int(xs.min()), int(max(ys.min() - 3, 12 * scale)))
            cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
            cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)
    return img


def _pad_even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_overlay_video(path: str, frames_iter: Iterable[np.ndarray], fps: float, crf: int = 23) -> int:
    """Encode ``[H, W, 3]`` uint8 RGB frames as H.264 (libx264, yuv420p) MP4 at ``fps``.

    Odd sizes are padded by one pixel (yuv420p needs even sizes). The file is written to a
    temporary name and renamed, so a reader never sees a half-written file.

    Returns:
        the number of frames written.
    """
    import fractions

    import av

    tmp = f"{path}.tmp.mp4"
    rate = fractions.Fraction(fps).limit_denominator(1001)
    n = 0
    container = av.open(tmp, "w", format="mp4")
    try:
        stream = None
        for frame in frames_iter:
            frame = _pad_even(np.asarray(frame))
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(f"overlay frames must be [H, W, 3] uint8, got {frame.dtype} {list(frame.shape)}")
            if stream is None:
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            elif (frame.shape[1], frame.shape[0]) != (stream.width, stream.height):
                raise ValueError(f"overlay frame {n} is {frame.shape[1]}x{frame.shape[0]}, "
                                 f"the first was {stream.width}x{stream.height}")
            for pkt in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(pkt)
            n += 1
        if stream is None:
            raise ValueError(f"write_overlay_video({path!r}): no frames given")
        for pkt in stream.encode():
            container.mux(pkt)
    except BaseException:
        container.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    container.close()
    os.replace(tmp, path)
    return n


def write_overlay_png(path: str, frame: np.ndarray) -> None:
    """Write one ``[H, W, 3]`` uint8 RGB frame as PNG."""
    import cv2

    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write PNG {str(path)!r}")
