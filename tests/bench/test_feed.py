"""`hqseg bench`'s feed scenario: the tracker's non-model CPU per 1080p frame with an instant engine.

Checks the rows and the report, not speed (a shared CI machine's timings are not targets)."""

import json

import pytest

from hqseg_ray.bench.feed import TARGET_FPS, measure


def test_instant_engine_tracks_every_object_and_reports_cpu():
    row = measure(256, 64, 3, n_frames=3, label="toy")
    assert row["masks_kept"] == 3 * 3                    # the fake model's objects are all tracked
    assert 0 < row["critical_ms"] <= row["total_ms"] * 1.05 + 1
    assert row["max_fps"] == pytest.approx(1000 / row["critical_ms"], rel=0.01) and row["target_fps"] == TARGET_FPS
    assert row["frame_size"] == [1080, 1920]


def test_feed_scenario_writes_rows_targets_and_table(tmp_path):
    from hqseg_ray.bench import Settings, run_bench

    settings = Settings.quick()
    settings.feed_frames, settings.feed_objects = 2, (1, 5)
    run_bench(tmp_path / "b", settings, ["feed"], command="hqseg bench --quick (test)", data_dir=tmp_path / "d")
    res = json.loads((tmp_path / "b" / "bench.json").read_text())
    rows = res["scenarios"]["feed"]["rows"]
    assert [(r["model"], r["objects"]) for r in rows] == [("toy", 1), ("toy", 5), ("vit_tiny", 1), ("vit_tiny", 5)]
    assert all(r["critical_ms"] > 0 and r["total_ms"] > 0 and r["masks_kept"] == 2 * r["objects"] for r in rows)
    md = (tmp_path / "b" / "bench.md").read_text()
    assert "CPU feed projection" in md and "max frames/s per actor" in md
    assert "critical path, ms/frame, 1080p, 5 objects (vit_tiny)" in md
