"""Broken inputs give a VideoError naming the input and the reason, quickly (no hang)."""

from __future__ import annotations

import socket
import time

import av
import numpy as np
import pytest

from hqseg_ray.video import VideoError, probe_video, read_frames

from .helpers import decode_index


def _expect_error(uri, *fragments, seconds=10.0, **kw):
    t0 = time.monotonic()
    with pytest.raises(VideoError) as ei:
        probe_video(uri, **kw)
    assert time.monotonic() - t0 < seconds
    msg = str(ei.value)
    assert str(uri) in msg and ei.value.uri == str(uri)
    for frag in fragments:
        assert frag in msg, msg
    return ei.value


def test_zero_bytes(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    _expect_error(str(p), "empty (0 bytes)")


def test_random_bytes(tmp_path):
    p = tmp_path / "random.mp4"
    p.write_bytes(np.random.default_rng(0).bytes(20000))
    _expect_error(str(p), "not a readable video")


def test_text_named_mp4(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video\n" * 50)
    _expect_error(str(p), "not a readable video")


def test_missing_file(tmp_path):
    _expect_error(str(tmp_path / "nope.mp4"), "does not exist")


def test_audio_only(tmp_path):
    p = tmp_path / "audio.m4a"
    c = av.open(str(p), "w")
    s = c.add_stream("aac", rate=8000)
    for i in range(4):
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        fr.sample_rate, fr.pts = 8000, i * 1024
        for pkt in s.encode(fr):
            c.mux(pkt)
    for pkt in s.encode():
        c.mux(pkt)
    c.close()
    _expect_error(str(p), "no video stream", "audio")


def test_error_pickles():
    import pickle

    e = pickle.loads(pickle.dumps(VideoError("s3://b/a.mp4", "does not exist")))
    assert str(e) == "video 's3://b/a.mp4': does not exist" and e.reason == "does not exist"


@pytest.mark.parametrize("fmt,ext,keep", [("mp4", ".mp4", 0.8), ("matroska", ".mkv", 0.6)])
def test_truncated_returns_frames_before_the_cut(make_video, tmp_path, fmt, ext, keep):
    opts = {"movflags": "faststart"} if fmt == "mp4" else None  # index first, so the cut hits frames
    src = make_video(f"whole_{fmt}{ext}", n=60, gop=12, bframes=2, fmt=fmt, container_options=opts)
    data = src.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: int(len(data) * keep)])
    info = probe_video(str(cut))
    assert info.truncated and info.warnings
    assert 0 < info.num_frames < 60
    stats: dict = {}
    frames, idx, _ = read_frames(str(cut), 0, info.num_frames, info=info, stats=stats)
    assert idx.tolist() == list(range(info.num_frames))
    assert [decode_index(f) for f in frames] == idx.tolist()
    assert stats["truncated"] is True


def test_truncated_mp4_without_index_is_a_clear_error(make_video, tmp_path):
    src = make_video("whole_plain.mp4", n=60, gop=12)  # moov atom at the end: the cut removes it
    cut = tmp_path / "cut_plain.mp4"
    cut.write_bytes(src.read_bytes()[:3000])
    _expect_error(str(cut), "not a readable video", "complete")


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_s3_bucket_fails_fast():
    from pyarrow import fs

    s3 = fs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{_closed_port()}", scheme="http", access_key="x", secret_key="y",
        region="us-east-1", connect_timeout=1, request_timeout=1,
        retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=1),
    )
    err = _expect_error("s3://no-such-bucket/clip.mp4", "cannot reach", seconds=15, filesystem=s3)
    assert err.uri == "s3://no-such-bucket/clip.mp4"
