"""Frame-exact reading across codecs, GOP sizes, B-frames, pixel formats, sizes, rotation, VFR."""

from __future__ import annotations

import numpy as np
import pytest

from hqseg_ray.video import iter_frames, probe_video, read_frames

from .helpers import decode_index

N = 30
CASES = {
    "h264_gop1": dict(gop=1),
    "h264_gop12": dict(gop=12),
    "h264_gop12_bframes": dict(gop=12, bframes=2),
    "h264_gop250_bframes": dict(gop=250, bframes=3),  # a single keyframe
    "mpeg4_gop12_bframes": dict(codec="mpeg4", gop=12, bframes=2),
    "vp9_webm": dict(codec="libvpx-vp9", fmt="webm", gop=12),
    "h264_mkv_bframes": dict(fmt="matroska", gop=12, bframes=2),
    "h264_yuv444p": dict(pix_fmt="yuv444p"),
    "h264_gray": dict(pix_fmt="gray"),  # 4:0:0 H.264; FFmpeg decodes it as yuv420p
    "ffv1_gray_mkv": dict(codec="ffv1", pix_fmt="gray", fmt="matroska"),
    "h264_yuv420p10le": dict(pix_fmt="yuv420p10le", bframes=2),
    "h264_yuv444p_853x479": dict(pix_fmt="yuv444p", w=853, h=479, n=8, gop=4),
    "mpeg4_yuv420p_853x479": dict(codec="mpeg4", w=853, h=479, n=8, gop=4),
}
EXT = {"webm": ".webm", "matroska": ".mkv"}


@pytest.fixture(params=sorted(CASES), scope="module")
def case(request, make_video):
    kw = dict(CASES[request.param])
    kw.setdefault("n", N)
    path = make_video(request.param + EXT.get(kw.get("fmt"), ".mp4"), **kw)
    return path, kw


def test_probe_and_read_every_frame(case):
    path, kw = case
    n, w, h = kw["n"], kw.get("w", 64), kw.get("h", 48)
    info = probe_video(str(path))
    assert (info.kind, info.num_frames, info.width, info.height, info.rotation) == ("video", n, w, h, 0)
    assert info.keyframes[0] == 0 and not info.truncated
    if kw.get("pix_fmt", "yuv420p") != "gray" or kw.get("codec") == "ffv1":
        assert info.pix_fmt == kw.get("pix_fmt", "yuv420p")
    if kw.get("codec", "libx264") == "libx264":
        assert info.keyframes == list(range(0, n, kw.get("gop", 12)))
    assert abs(info.fps - 25) < 1e-6 and abs(info.duration - n / 25) < 1e-3
    frames, idx, times = read_frames(str(path), 0, n, info=info)
    assert frames.dtype == np.uint8 and frames.shape == (n, h, w, 3)
    assert idx.dtype == np.int64 and idx.tolist() == list(range(n))
    assert [decode_index(f) for f in frames] == list(range(n))
    np.testing.assert_allclose(times, np.arange(n) / 25, atol=1e-3)


def test_read_inner_range_with_stride(case):
    path, kw = case
    n = kw["n"]
    start, stop = n // 2 - 3, n // 2 + 4
    stats: dict = {}
    frames, idx, _ = read_frames(str(path), start, stop, stride=2, stats=stats)
    assert idx.tolist() == list(range(start, stop, 2))
    assert [decode_index(f) for f in frames] == idx.tolist()
    assert stats["returned"] == len(idx) and stats["seek_frame"] <= start


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata(make_video, rotation):
    path = make_video(f"rot{rotation}.mp4", n=12, rotation_cw=rotation)
    info = probe_video(str(path))
    w, h = (48, 64) if rotation in (90, 270) else (64, 48)
    assert (info.rotation, info.width, info.height) == (rotation, w, h)
    frames, idx, _ = read_frames(str(path), 3, 9, info=info)
    assert frames.shape == (6, h, w, 3)
    if rotation == 90:  # the marker (bottom-left of the stored picture) is top-left after a clockwise turn
        assert frames[0, :16, :8].mean() > 200 and frames[0, -16:, -8:].mean() < 60
    # decode_index turns the frame back and checks the marker: a turn the wrong way fails there
    assert [decode_index(f, rotation=rotation) for f in frames] == list(range(3, 9))


def test_resize_long_side(make_video):
    path = make_video("h264_gop12.mp4", n=N, gop=12)
    frames, _, _ = read_frames(str(path), 0, 4, size=32)
    assert frames.shape == (4, 24, 32, 3)
    frames, _, _ = read_frames(str(path), 0, 2, size=128)
    assert frames.shape == (2, 96, 128, 3)


def test_variable_frame_rate_indices_and_times(make_video):
    path = make_video("vfr.mp4", n=24, vfr=True, bframes=2, gop=8)
    info = probe_video(str(path))
    assert info.num_frames == 24
    expected = np.cumsum([0] + [(20, 40, 80, 33)[i % 4] for i in range(23)]) / 1000
    frames, idx, times = read_frames(str(path), 5, 19, info=info)
    assert idx.tolist() == list(range(5, 19))
    assert [decode_index(f) for f in frames] == list(range(5, 19))
    np.testing.assert_allclose(times, expected[5:19], atol=1e-3)


def test_last_chunk_decodes_from_nearest_keyframe(make_video):
    path = make_video("long_gop12.mp4", n=300, gop=12, bframes=2)
    info = probe_video(str(path))
    assert info.num_frames == 300 and info.keyframes == list(range(0, 300, 12))
    stats: dict = {}
    frames, idx, _ = read_frames(str(path), 290, 300, info=info, stats=stats)
    assert idx.tolist() == list(range(290, 300))
    assert [decode_index(f) for f in frames] == list(range(290, 300))
    assert stats["seek_frame"] == 288
    assert stats["decoded"] <= 12, stats  # 288..299 at most, not 300 frames from the start


def test_iter_frames_matches_read_frames(make_video):
    path = make_video("h264_gop12_bframes.mp4", n=N, gop=12, bframes=2)
    got = list(iter_frames(str(path), 10, 20, stride=3))
    frames, idx, times = read_frames(str(path), 10, 20, stride=3)
    assert [g[1] for g in got] == idx.tolist() == [10, 13, 16, 19]
    for (f, _, t), f2, t2 in zip(got, frames, times):
        assert np.array_equal(f, f2) and t == t2


def test_range_outside_video_is_an_error(make_video):
    from hqseg_ray.video import VideoError

    path = make_video("h264_gop12.mp4", n=N, gop=12)
    with pytest.raises(VideoError, match=r"\[25, 40\) is outside the video's 30 frames"):
        read_frames(str(path), 25, 40)
    frames, idx, _ = read_frames(str(path), 7, 7)
    assert frames.shape[0] == 0 and idx.size == 0


def test_file_uri_and_to_dict(make_video):
    import json

    path = make_video("h264_gop12.mp4", n=N, gop=12)
    info = probe_video("file://" + str(path))
    d = info.to_dict()
    assert json.loads(json.dumps(d))["num_frames"] == N and len(d["pts"]) == N
    assert "pts" not in info.to_dict(tables=False)
    with pytest.raises(ValueError, match="lacks 'pts'"):
        type(info).from_dict(info.to_dict(tables=False))
    frames, idx, _ = read_frames("file://" + str(path), 28, 30, info=type(info).from_dict(d))
    assert idx.tolist() == [28, 29] and [decode_index(f) for f in frames] == [28, 29]


def test_frames_that_do_not_decode_raise_or_are_listed(make_video, caplog):
    import copy

    from hqseg_ray.video import VideoError

    path = make_video("h264_gop12.mp4", n=N, gop=12)
    info = copy.deepcopy(probe_video(str(path)))
    info.pts.append(info.pts[-1] + 512)  # a frame the file does not hold
    info.num_frames += 1
    with pytest.raises(VideoError, match=r"1 frame\(s\) of \[28, 31\) did not decode \(first: 30\)"):
        read_frames(str(path), 28, 31, info=info)
    stats: dict = {}
    frames, idx, _ = read_frames(str(path), 28, 31, info=info, stats=stats, allow_partial=True)
    assert idx.tolist() == [28, 29] and stats["missing"] == [30] and frames.shape[0] == 2
    assert "did not decode" in caplog.text
