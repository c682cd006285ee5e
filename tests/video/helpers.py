"""Test videos whose every frame carries its own index in its pixels.

The index is written as 8 base-4 digits, one per block of a 4x3 block grid (rows 0-1), each digit
a flat gray level far from its neighbours (robust to lossy compression and chroma subsampling).
Row 2 holds an orientation marker: its left quarter is white, the rest black.
"""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import Optional

import av
import numpy as np

LEVELS = np.array([24, 92, 160, 232])


def pattern(index: int, w: int = 64, h: int = 48) -> np.ndarray:
    """``[h, w, 3]`` uint8 RGB frame encoding ``index``."""
    img = np.zeros((h, w, 3), np.uint8)
    bw, bh = w // 4, h // 3
    d = index
    for k in range(8):
        r, c = divmod(k, 4)
        img[r * bh:(r + 1) * bh, c * bw:(c + 1) * bw] = LEVELS[d % 4]
        d //= 4
    img[2 * bh:, :bw] = 255
    return img


def decode_index(frame: np.ndarray, rotation: int = 0) -> int:
    """Index encoded by :func:`pattern` in a frame shown with clockwise ``rotation``."""
    if rotation:
        frame = np.rot90(frame, k={90: 1, 180: 2, 270: -1}[rotation])
    h, w = frame.shape[:2]
    bw, bh = w // 4, h // 3
    gray = frame.astype(np.float32).mean(axis=2)
    idx = 0
    for k in reversed(range(8)):
        r, c = divmod(k, 4)
        block = gray[r * bh + bh // 4:(r + 1) * bh - bh // 4, c * bw + bw // 4:(c + 1) * bw - bw // 4]
        idx = idx * 4 + int(np.abs(LEVELS - block.mean()).argmin())
    marker = gray[2 * bh + bh // 4:h - bh // 4, bw // 4:bw - bw // 4].mean()
    assert marker > 200, f"orientation marker missing (mean {marker:.0f}); frame rotated wrongly?"
    return idx


def write_video(path: Path, n: int = 30, codec: str = "libx264", pix_fmt: str = "yuv420p", gop: int = 12,
                bframes: int = 0, w: int = 64, h: int = 48, rotation_cw: int = 0, vfr: bool = False,
                fmt: Optional[str] = None, container_options: Optional[dict] = None, fps: int = 25) -> Path:
    """Encode frames 0..n-1 of :func:`pattern`. ``vfr`` gives frame durations of 20/40/80/33 ms."""
    c = av.open(str(path), "w", format=fmt, options=container_options or {})
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = w, h, pix_fmt
    s.codec_context.gop_size = gop
    if codec == "libx264":
        s.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}",
                     "preset": "veryfast" if bframes else "ultrafast"}
    elif bframes:
        s.codec_context.max_b_frames = bframes
    if rotation_cw:
        s.set_display_rotation(-rotation_cw)  # PyAV takes counter-clockwise degrees
    tb = fractions.Fraction(1, 1000)
    if vfr:
        s.time_base = tb
        s.codec_context.time_base = tb
    t = 0
    for i in range(n):
        f = av.VideoFrame.from_ndarray(pattern(i, w, h), format="rgb24")
        if vfr:
            f.pts, f.time_base = t, tb
            t += (20, 40, 80, 33)[i % 4]
        for p in s.encode(f):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path
