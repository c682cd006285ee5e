"""The bulk job on a local Ray cluster: statuses, equality with `hqseg segment`, fake GPUs, resume."""

import os

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from tests.pipeline.conftest import job_config

pytestmark = [pytest.mark.ray, pytest.mark.e2e]

GOOD = {"synth_s11_000", "synth_s11_001", "synth_s11_002", "synth_s12_000"}


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def read_masks(out):
    path = os.path.join(str(out), "masks")
    table = pads.dataset(path, format="parquet", partitioning="hive").to_table()
    rows = table.to_pylist()
    for r in rows:
        r["video_id"] = str(r["video_id"])
    key = lambda r: (r["video_id"], r["frame_index"], r["object_id"])  # noqa: E731
    return sorted(rows, key=key)


def statuses(out):
    return {r["video_id"]: r for r in pq.read_table(os.path.join(str(out), "videos.parquet")).to_pylist()}


def strip(rows, cols=("video_id", "frame_index", "object_id", "rle_counts", "source", "chunk_index")):
    return [tuple(r[c] for c in cols) for r in rows]


def test_job_end_to_end_statuses_and_masks(ray_local, job_inputs, small_model_ckpt, tmp_path):
    from hqseg_ray.model.engine import SegEngine
    from hqseg_ray.pipeline import run_job
    from hqseg_ray.track import segment_video

    manifest, rows = job_inputs
    config = job_config(manifest, tmp_path / "out", small_model_ckpt)
    summary = run_job(config, progress=False)
    st = statuses(tmp_path / "out")
    assert {v for v, s in st.items() if s["status"] == "ok"} == GOOD
    assert st["corrupt"]["status"] == "failed" and "corrupt.mp4" in st["corrupt"]["error"]
    assert st["bad_prompts"]["status"] == "failed" and "frame 500" in st["bad_prompts"]["error"]
    assert summary.ok == 4 and summary.failed == 2
    assert st["synth_s12_000"]["chunks"] >= 4 and st["synth_s12_000"]["frames"] == 30
    masks = read_masks(tmp_path / "out")
    assert {r["video_id"] for r in masks} == GOOD
    labelled = rows[3]["prompts"][0]["object_id"]
    long_labels = {r["object_id"]: r["label"] for r in masks if r["video_id"] == "synth_s12_000"}
    assert long_labels[labelled] == "blob" and set(long_labels.values()) <= {"blob", "thing"}
    assert all(r["label"] is None for r in masks if r["video_id"] != "synth_s12_000")
    from hqseg_ray.export.review import load_review

    assert all(load_review(str(tmp_path / "out"), v, rebuild=False)["video_id"] == v for v in GOOD)
    # same inputs through `segment_video` on one machine, no Ray: identical masks
    engine = SegEngine.load(config.model)
    for row in rows:
        if row["video_id"] not in GOOD:
            continue
        want = sorted(((fr.frame_index, oid, rle["counts"]) for fr in segment_video(
            row["video"], row["prompts"], engine, config, video_id=row["video_id"])
            for oid, rle in zip(fr.object_ids, fr.rles)))
        got = [(r["frame_index"], r["object_id"], r["rle_counts"]) for r in masks if r["video_id"] == row["video_id"]]
        assert got == want, row["video_id"]


def test_rerun_skips_done_videos_without_duplicates(ray_local, job_inputs, small_model_ckpt, tmp_path):
    from hqseg_ray.pipeline import run_job

    manifest, _ = job_inputs
    config = job_config(manifest, tmp_path / "out", small_model_ckpt)
    run_job(config, progress=False)
    first = read_masks(tmp_path / "out")
    # a half-written video: its file removed as if the driver died before writing it
    victim = os.path.join(str(tmp_path / "out"), "masks", "video_id=synth_s11_001")
    for f in os.listdir(victim):
        os.remove(os.path.join(victim, f))
    summary = run_job(config, progress=False)
    assert summary.skipped == 3 and summary.ok == 1 and summary.failed == 2
    assert strip(read_masks(tmp_path / "out")) == strip(first)


def test_job_metrics_are_created_inside_ray(ray_local):
    from hqseg_ray.pipeline.metrics import JobMetrics

    @ray_local.remote
    def use_metrics():
        m = JobMetrics()
        m.chunk("segment", 8, 1.5, 0.2)
        m.scores([0.9, 0.4])
        m.video("ok")
        return sorted(m._metrics())

    assert ray_local.get(use_metrics.remote()) == ["chunk_s", "frames", "relay_wait_s", "score", "videos"]
    assert JobMetrics()._metrics() is not None  # the driver is connected too
