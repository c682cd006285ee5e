"""The review queue: each reason fires where the masks say it should, priorities order it, stride
is respected, and the file / task list / CLI round-trip."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

from hqseg_ray.export.review import (REASONS, build_review, check_review, load_review, review_from_frames,
                                     review_path)
from hqseg_ray.masks import rle_encode
from hqseg_ray.track.types import FrameResult

H, W = 40, 60


def _box(x, y, w, h):
    m = np.zeros((H, W), bool)
    m[y:y + h, x:x + w] = True
    return m


def _frames(events: dict, n: int, stride: int = 1) -> list[FrameResult]:
    """``events[(t, oid)] = (mask, score, chunk)``; objects absent where no entry."""
    out = []
    for t in range(0, n, stride):
        ids = sorted(o for (tt, o) in events if tt == t)
        e = [events[(t, o)] for o in ids]
        out.append(FrameResult(t, ids, [rle_encode(m) for m, _, _ in e], [s for _, s, _ in e], ["track"] * len(ids),
                               max([c for _, _, c in e], default=0), [c for _, _, c in e]))
    return out


def _scenario():
    """10 frames. Object 1: steady, score drops to 0.5 on frame 3 (low + drop), area x4 on frame 6.
    Object 2: occluded on frames 4-5 (lost on 4, re-acquired on 6). Object 3: in chunk 0 on 0..4,
    jumps across the image in chunk 1 on 5.. (stitched). Object 4: gone after frame 2 (lost on 3)."""
    ev = {}
    for t in range(10):
        big = t >= 6
        ev[(t, 1)] = (_box(2, 2, 16 if big else 8, 16 if big else 8), 0.5 if t == 3 else 0.95, 0)
        if not 4 <= t <= 5:
            ev[(t, 2)] = (_box(30, 20, 6, 6), 0.9, 0)
        ev[(t, 3)] = (_box(40, 2, 6, 6) if t <= 4 else _box(10, 28, 6, 6), 0.9, 0 if t <= 4 else 1)
        if t <= 2:
            ev[(t, 4)] = (_box(50, 30, 5, 5), 0.9, 0)
    return ev


def _by(review, reason):
    return {(it["frame_index"], it["object_id"]) for it in review["items"] if reason in it["reasons"]}


def test_each_reason_fires_where_expected():
    rv = review_from_frames(_frames(_scenario(), 10), "v", 10, labels={"1": "car"})
    check_review(rv, "test")
    assert _by(rv, "low_score") == {(3, 1)}
    assert _by(rv, "score_drop") == {(3, 1)}
    assert _by(rv, "area_jump") == {(6, 1)}
    assert _by(rv, "lost") == {(4, 2), (3, 4)}
    assert _by(rv, "reacquired") == {(6, 2)}
    assert _by(rv, "stitched") == {(5, 3)}
    assert rv["counts"] == {"low_score": 1, "score_drop": 1, "area_jump": 1, "reacquired": 1, "lost": 2,
                            "stitched": 1}
    top = [(it["frame_index"], it["object_id"]) for it in rv["items"][:2]]
    assert top == [(5, 3), (3, 1)]  # a box jump across a chunk boundary (IoU 0), then two reasons at once
    first = rv["items"][1]
    assert first["label"] == "car" and first["prev_score"] == 0.95 and first["prev_frame"] == 2
    assert [it["rank"] for it in rv["items"]] == list(range(1, len(rv["items"]) + 1))
    prios = [it["priority"] for it in rv["items"]]
    assert prios == sorted(prios, reverse=True) and all(0 < p <= 1 for p in prios)
    lost = next(it for it in rv["items"] if it["reasons"] == ["lost"] and it["object_id"] == 4)
    assert lost["score"] is None and lost["area"] is None and lost["bbox_xywh"] == [50.0, 30.0, 5.0, 5.0]
    assert {o["object_id"]: o["label"] for o in rv["objects"]} == {1: "car", 2: None, 3: None, 4: None}
    assert set(rv["counts"]) == set(REASONS)


def test_a_steady_video_has_an_empty_queue():
    ev = {(t, 1): (_box(2 + t, 2, 8, 8), 0.95, t // 4) for t in range(12)}
    rv = review_from_frames(_frames(ev, 12), "v", 12)
    assert rv["items"] == [] and rv["objects"][0]["frames"] == 12


def test_stride_gaps_are_not_lost_frames():
    """With stride 3 the object is seen on 0, 3, 6, 9: no gap; missing on 6 only is lost/re-acquired."""
    ev = {(t, 1): (_box(2, 2, 8, 8), 0.9, 0) for t in range(0, 12, 3)}
    assert review_from_frames(_frames(ev, 12, 3), "v", 12, stride=3)["items"] == []
    del ev[(6, 1)]
    rv = review_from_frames(_frames(ev, 12, 3), "v", 12, stride=3)
    assert _by(rv, "lost") == {(6, 1)} and _by(rv, "reacquired") == {(9, 1)}
    # the last labelled frame of a 12-frame video at stride 3 is 9: present there, so not lost at the end
    assert rv["stride"] == 3


def test_build_from_parquet_equals_build_from_frames(tmp_path):
    """The job builds the queue from its frames, the export from the Parquet rows: same queue."""
    from hqseg_ray.export.formats import list_videos, load_video
    from hqseg_ray.export.parquet import write_video_parquet

    frames = _frames(_scenario(), 10)
    write_video_parquet(frames, str(tmp_path), "v", meta={"num_frames": 10, "stride": 1}, labels={1: "car"})
    (ref,), _ = list_videos(str(tmp_path))
    from_rows = load_video(ref).review()
    from_frames = review_from_frames(frames, "v", 10, labels={1: "car"})
    assert from_rows["items"] == from_frames["items"] and from_rows["objects"] == from_frames["objects"]


def test_load_review_reads_the_file_or_rebuilds_it(tmp_path):
    from hqseg_ray.export.parquet import write_video_parquet
    from hqseg_ray.export.review import write_review

    out = str(tmp_path)
    frames = _frames(_scenario(), 10)
    write_video_parquet(frames, out, "v", meta={"num_frames": 10, "stride": 1})
    rebuilt = load_review(out, "v")  # no file yet: built from the masks
    assert rebuilt["video_id"] == "v" and rebuilt["counts"]["lost"] == 2
    with pytest.raises(FileNotFoundError, match="hqseg export"):
        load_review(out, "v", rebuild=False)
    path = write_review(out, rebuilt)
    assert path == review_path(out, "v") and load_review(out, "v", rebuild=False) == rebuilt
    with pytest.raises(FileNotFoundError, match="'nope'"):
        load_review(out, "nope")
    json.dump({"schema": "hqseg.review", "version": 99}, open(path, "w"))
    with pytest.raises(ValueError, match="newer"):
        load_review(out, "v")
    json.dump({"something": "else"}, open(path, "w"))
    with pytest.raises(ValueError, match="not an hqseg review queue"):
        load_review(out, "v")


def test_export_review_task_list_via_cli(tmp_path, capsys):
    from hqseg_ray.cli import main
    from hqseg_ray.export.parquet import write_video_parquet

    out = str(tmp_path)
    for vid in ("a", "b"):
        write_video_parquet(_frames(_scenario(), 10), out, vid, meta={"num_frames": 10, "stride": 1},
                            labels={1: "car"})
    assert main(["export", out, "--format", "review", "--review-items", "3"]) == 0
    assert "review" in capsys.readouterr().out
    tasks = json.load(open(os.path.join(out, "exports", "review", "tasks.json")))
    assert len(tasks) == 6 and {t["video_id"] for t in tasks} == {"a", "b"}
    assert [t["priority"] for t in tasks] == sorted((t["priority"] for t in tasks), reverse=True)
    rows = list(csv.DictReader(open(os.path.join(out, "exports", "review", "tasks.csv"))))
    assert len(rows) == 6 and rows[0]["reasons"] == "|".join(tasks[0]["reasons"])
    assert float(rows[0]["x"]) == tasks[0]["bbox_xywh"][0]
    assert all(os.path.exists(review_path(out, v)) for v in ("a", "b"))  # the full per-video queues
    # thresholds from the command line: nothing is low at 0.4, so (3, 1) keeps only its score drop
    assert main(["export", out, "--format", "review", "--review-low-score", "0.4"]) == 0
    q = load_review(out, "a", rebuild=False)
    assert q["thresholds"]["low_score"] == 0.4 and q["counts"]["low_score"] == 0


def test_build_review_accepts_a_pyarrow_table():
    import pyarrow as pa

    table = pa.table({"frame_index": [0, 1], "object_id": [1, 1], "score": [0.9, 0.3], "area": [10, 10],
                      "bbox_xywh": [[0, 0, 2, 5], [0, 0, 2, 5]], "source": ["prompt", "track"],
                      "chunk_index": [0, 0]})
    rv = build_review(table, "t", 2)
    assert _by(rv, "low_score") == {(1, 1)} and _by(rv, "score_drop") == {(1, 1)}
