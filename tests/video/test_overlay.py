"""Overlay rendering and the MP4 / PNG writers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hqseg_ray.video import object_color, probe_video, read_frames, render_overlay, write_overlay_png, write_overlay_video


def masks(h=48, w=64):
    a = np.zeros((h, w), bool)
    a[10:30, 5:25] = True
    b = np.zeros((h, w), bool)
    b[20:40, 35:60] = True
    return {1: a, 7: b}


def test_colours_are_stable_and_distinct():
    assert object_color(3) == object_color(3)
    assert len({object_color(i) for i in range(1, 20)}) == 19


def test_render_tints_and_outlines_each_object():
    frame = np.full((48, 64, 3), 100, np.uint8)
    out = render_overlay(frame, masks(), scores={1: 0.9})
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.array_equal(out[0, 63], frame[0, 63])  # background untouched
    inside = out[20, 15].astype(int)  # tinted towards object 1's colour
    c1 = np.array(object_color(1))
    assert np.abs(inside - c1).sum() < np.abs(frame[20, 15].astype(int) - c1).sum()
    assert np.array_equal(render_overlay(frame, masks()), render_overlay(frame, masks()))
    with pytest.raises(ValueError, match="mask of object 2 has shape"):
        render_overlay(frame, {2: np.zeros((10, 10), bool)})


def test_write_overlay_video_odd_size_and_png(tmp_path):
    frames = [render_overlay(np.full((47, 63, 3), 40 * i, np.uint8), {i: np.eye(47, 63, dtype=bool)})
              for i in range(5)]
    path = tmp_path / "overlay.mp4"
    assert write_overlay_video(str(path), iter(frames), fps=12.5) == 5
    info = probe_video(str(path))
    assert (info.num_frames, info.width, info.height, info.codec, info.pix_fmt) == (5, 64, 48, "h264", "yuv420p")
    assert abs(info.fps - 12.5) < 1e-6
    got, _, _ = read_frames(str(path), 4, 5, info=info)
    assert np.abs(got[0, :47, :63].astype(int) - frames[4].astype(int)).mean() < 6
    assert not list(tmp_path.glob("*.tmp.mp4"))
    png = tmp_path / "preview.png"
    write_overlay_png(str(png), frames[2])
    assert np.array_equal(cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB), frames[2])
    with pytest.raises(ValueError, match="no frames"):
        write_overlay_video(str(tmp_path / "none.mp4"), [], fps=25)
    assert not (tmp_path / "none.mp4").exists()
