"""Prompt manifests: reading (JSONL, JSON, Parquet, folders, globs) and validation."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hqseg_ray.masks import rle_encode
from hqseg_ray.prompts import (ManifestError, ManifestRow, PromptSpec, PromptValidationError,
                               load_manifest, validate_prompts, video_id_from_uri)
from hqseg_ray.video import VideoInfo

ROWS = [
    {"video": "clips/a.mp4", "video_id": "a",
     "prompts": [{"object_id": 1, "frame": 0, "points": [[41, 23], [40, 26]], "labels": [1, 0]},
                 {"object_id": 2, "frame": 0, "box": [1, 2, 20, 18]},
                 {"object_id": 1, "frame": 12, "box": [38, 21, 47, 30]}]},
    {"video": "s3://bucket/clips/b.mkv"},
]


def info(n=30, w=64, h=48) -> VideoInfo:
    return VideoInfo(uri="a.mp4", kind="video", num_frames=n, fps=25.0, time_base=None, duration=n / 25,
                     width=w, height=h)


def test_jsonl_rows_defaults_and_relative_paths(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    rows = load_manifest(str(path))
    assert [r.video_id for r in rows] == ["a", "b"]
    assert rows[0].video == os.path.join(str(tmp_path), "clips/a.mp4")
    assert rows[1].video == "s3://bucket/clips/b.mkv" and rows[1].prompts == [] and rows[1].auto is None
    assert rows[0].prompts[2] == PromptSpec(object_id=1, frame=12, box=[38, 21, 47, 30])


def test_jsonl_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n"
                    + json.dumps({"video": "x.mp4", "prompts": [{"frame": "one", "point": [1, 2]}]}) + "\n")
    with pytest.raises(ManifestError, match=r"bad.jsonl line 2: invalid JSON"):
        load_manifest(str(path))
    path.write_text(json.dumps(ROWS[0]) + "\n"
                    + json.dumps({"video": "x.mp4", "prompts": [{"frame": "one", "point": [1, 2]}]}) + "\n"
                    + json.dumps({"video": "other/a.mp4"}) + "\n")
    with pytest.raises(ManifestError) as ei:
        load_manifest(str(path))
    msg = str(ei.value)
    assert "line 2: prompts.0.frame" in msg and "line 2: prompts.0.point: Extra inputs" in msg
    assert "video_id 'a' is used by line 1, line 3" in msg


def test_parquet_json_string_and_nested_prompts(tmp_path):
    flat = tmp_path / "flat.parquet"
    pq.write_table(pa.Table.from_pylist([dict(r, prompts=json.dumps(r.get("prompts", []))) for r in ROWS]), flat)
    nested = tmp_path / "nested.parquet"
    pq.write_table(pa.Table.from_pylist([dict(r, prompts=r.get("prompts", [])) for r in ROWS]), nested)
    for path in (flat, nested):
        rows = load_manifest(str(path))
        assert [len(r.prompts) for r in rows] == [3, 0]
        assert rows[0].prompts[0].points == [[41, 23], [40, 26]] and rows[0].prompts[1].points is None
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"video": "a.mp4", "prompts": "[{"}]), bad)
    with pytest.raises(ManifestError, match=r"bad.parquet.* row 0: prompts is not valid JSON"):
        load_manifest(str(bad))


def test_folder_and_glob_of_videos(tmp_path):
    (tmp_path / "v10.mp4").write_bytes(b"x")
    (tmp_path / "v2.mkv").write_bytes(b"x")
    (tmp_path / "readme.txt").write_text("x")
    seq = tmp_path / "seq"
    seq.mkdir()
    (seq / "00000.jpg").write_bytes(b"x")
    rows = load_manifest(str(tmp_path))
    assert [r.video_id for r in rows] == ["seq", "v2", "v10"] and all(r.prompts == [] for r in rows)
    assert [r.video_id for r in load_manifest(str(tmp_path / "v*.mp4"))] == ["v10"]
    assert [r.video_id for r in load_manifest(str(seq))] == ["seq"]  # a frame folder itself
    with pytest.raises(ManifestError, match="matches no videos"):
        load_manifest(str(tmp_path / "*.avi"))
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(str(tmp_path / "nope.jsonl"))


def test_video_id_from_uri():
    assert video_id_from_uri("s3://b/x/My Clip.final.mp4") == "My_Clip.final"
    assert video_id_from_uri("/data/JPEGImages/480p/blackswan/") == "blackswan"
    assert ManifestRow(video="gs://b/c.webm").video_id == "c"


def test_valid_prompts_pass():
    row = load_manifest(ROWS[:1])[0]
    mask = np.zeros((48, 64), bool)
    mask[5:9, 5:9] = True
    row.prompts.append(PromptSpec(object_id=3, frame=29, mask=rle_encode(mask)))
    validate_prompts(row, info())
    validate_prompts(row)  # without a probe: structural checks only


def test_every_problem_reported_at_once():
    wrong_size = rle_encode(np.zeros((10, 10), bool))
    row = ManifestRow(video="s3://b/clip.mp4", prompts=[
        {"object_id": 1, "frame": 30, "box": [1, 1, 5, 5]},                      # 0 frame out of range
        {"object_id": 2, "frame": 0, "points": [[70, 10]], "labels": [1]},       # 1 outside 64x48
        {"object_id": 3, "frame": 0, "points": [[1, 1], [2, 2]], "labels": [1, 2]},  # 2 label 2
        {"object_id": 4, "frame": 0, "points": [[1, 1], [2, 2]], "labels": [1]},  # 3 length mismatch
        {"object_id": 5, "frame": 0, "box": [50, 20, 10, 40]},                   # 4 x2 < x1
        {"object_id": 5, "frame": 0, "box": [1, 1, 2, 2]},                       # 5 duplicate id 5 on frame 0
        {"object_id": 6, "frame": 1, "mask": wrong_size},                        # 6 RLE size
        {"object_id": 7, "frame": 2},                                            # 7 nothing
        {"object_id": 8, "frame": -1, "box": [1, 1, 2, 2]},                      # 8 negative frame
    ])
    with pytest.raises(PromptValidationError) as ei:
        validate_prompts(row, info())
    err = ei.value
    msg = str(err)
    assert msg.startswith("video 'clip': ") and err.video_id == "clip"
    expected = [
        "prompt 0 (frame 30): frame 30 is outside the video (30 frames, 0..29)",
        "prompt 1 (frame 0): points [[70.0, 10.0]] are outside the 64x48 frame",
        "prompt 2 (frame 0): labels must be 0 or 1, got [2]",
        "prompt 3 (frame 0): 2 points but 1 labels",
        "prompt 4 (frame 0): box [50, 20, 10, 40] has x2 < x1",
        "prompts [4, 5] (frame 0): object 5 is prompted 2 times",
        "prompt 6 (frame 1): mask RLE size [10, 10] differs from the frame size [48, 64]",
        "prompt 7 (frame 2): needs at least one of points, box or mask",
        "prompt 8 (frame -1): frame -1 is negative",
    ]
    for line in expected:
        assert line in msg, f"missing {line!r} in:\n{msg}"
    assert len(err.problems) == len(expected)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == msg


def test_rle_problems_without_video():
    row = ManifestRow(video="a.mp4", prompts=[{"frame": 0, "mask": {"size": [4], "counts": "x"}},
                                              {"frame": 0, "mask": {"counts": "x"}}])
    with pytest.raises(PromptValidationError) as ei:
        validate_prompts(row)
    assert "mask size must be [H, W]" in str(ei.value) and "got keys ['counts']" in str(ei.value)


def test_unreachable_remote_manifest_is_a_manifest_error():
    import socket
    import time

    from pyarrow import fs

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    s3 = fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", access_key="x", secret_key="y",
                         region="us-east-1", connect_timeout=1, request_timeout=1,
                         retry_strategy=fs.AwsStandardS3RetryStrategy(max_attempts=1))
    t0 = time.monotonic()
    with pytest.raises(ManifestError, match=r"manifest 's3://b/m.jsonl': cannot reach it"):
        load_manifest("s3://b/m.jsonl", filesystem=s3)
    assert time.monotonic() - t0 < 15
