"""Corrections saved by the review page -> the next `hqseg label` run: the format, the merge into
the manifest, and (on a local Ray cluster) a rerun that redoes only the corrected video."""

from __future__ import annotations

import json
import os

import pytest

from hqseg_ray.corrections import (CorrectionRow, append_correction, apply_to_rows, merge_prompts,
                                   read_corrections)
from hqseg_ray.prompts import PromptSpec


def P(**kw) -> PromptSpec:
    return PromptSpec.model_validate(kw)


def test_merge_replaces_same_object_and_frame_and_keeps_the_rest():
    base = [P(object_id=1, frame=0, box=[1, 1, 9, 9]), P(object_id=2, frame=0, box=[2, 2, 8, 8]), P(box=[0, 0, 4, 4])]
    extra = [P(object_id=1, frame=0, points=[[3, 3]], labels=[1]), P(object_id=1, frame=7, box=[1, 1, 5, 5]),
             P(object_id=1, frame=7, box=[2, 2, 6, 6])]
    merged = merge_prompts(base, extra)
    assert [(p.object_id, p.frame) for p in merged] == [(2, 0), (None, 0), (1, 0), (1, 7)]
    assert merged[2].points == [[3, 3]] and merged[3].box == [2, 2, 6, 6]  # the last one wins


def test_read_corrections_merges_lines_and_names_every_bad_line(tmp_path):
    path = tmp_path / "corrections.jsonl"
    append_correction(str(path), CorrectionRow(video_id="a", prompts=[P(object_id=1, frame=2, box=[1, 1, 5, 5])]))
    append_correction(str(path), CorrectionRow(video_id="a", prompts=[P(object_id=1, frame=2, points=[[2, 2]],
                                                                        labels=[0])]))
    assert json.loads(path.read_text().splitlines()[0])["saved_at"]
    got = read_corrections(str(path))
    assert list(got) == ["a"] and got["a"][0].points == [[2, 2]] and got["a"][0].box is None
    with open(path, "a") as f:
        f.write('{"video_id": "b", "prompts": [{"frame": 1, "box": [1, 1, 2, 2]}]}\n')
        f.write("not json\n")
    with pytest.raises(ValueError) as err:
        read_corrections(str(path))
    assert f"{path}:3" in str(err.value) and "object_id" in str(err.value) and f"{path}:4" in str(err.value)
    with pytest.raises(FileNotFoundError, match="review page"):
        read_corrections(str(tmp_path / "missing.jsonl"))


def test_append_is_bounded(tmp_path):
    row = CorrectionRow(video_id="a", prompts=[P(object_id=1, frame=0, box=[1, 1, 5, 5])])
    path = str(tmp_path / "c.jsonl")
    size = append_correction(path, row, max_bytes=1000)
    with pytest.raises(OverflowError, match="1000 bytes"):
        for _ in range(1000 // size + 1):
            append_correction(path, row, max_bytes=1000)


def test_corrections_change_only_the_corrected_videos_resume_key():
    from hqseg_ray.pipeline.resume import input_key

    first = json.dumps([{"object_id": 1, "frame": 0, "box": [1, 1, 9, 9]}])
    rows = [{"video_id": v, "video": f"{v}.mp4", "prompts_json": first} for v in ("a", "b")]
    keys = [input_key("cfg", r, {"size": 1}) for r in rows]
    corr = {"a": [P(object_id=1, frame=3, box=[2, 2, 6, 6])], "zz": [P(object_id=1, frame=0, box=[1, 1, 2, 2])]}
    corrected, unknown = apply_to_rows(rows, corr)
    assert corrected == ["a"] and unknown == ["zz"]
    assert [p["frame"] for p in json.loads(rows[0]["prompts_json"])] == [0, 3]
    assert rows[1]["prompts_json"] == first
    # the resume key hashes the merged prompts: the corrected video is redone, the other resumes
    after = [input_key("cfg", r, {"size": 1}) for r in rows]
    assert after[0] != keys[0] and after[1] == keys[1]
    # the same corrections merged again (a third run) give the same key: nothing more to redo
    again = [{"video_id": v, "video": f"{v}.mp4", "prompts_json": first} for v in ("a", "b")]
    apply_to_rows(again, corr)
    assert [input_key("cfg", r, {"size": 1}) for r in again] == after


def test_corrections_do_not_change_the_config_hash():
    from hqseg_ray.config import JobConfig

    plain = JobConfig.model_validate({"input": {"manifest": "m.jsonl"}})
    corrected = JobConfig.model_validate({"input": {"manifest": "m.jsonl", "corrections": "out/corrections.jsonl"}})
    assert plain.config_hash() == corrected.config_hash()


def test_label_command_corrections_flag(tmp_path):
    from hqseg_ray.cli import build_parser
    from hqseg_ray.pipeline.cli import LabelCommand

    demo = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "label-demo.yaml")
    args = build_parser("label").parse_args(["label", demo, "--corrections", str(tmp_path / "c.jsonl")])
    assert LabelCommand().config(args).input.corrections == str(tmp_path / "c.jsonl")
    args = build_parser("label").parse_args(["label", demo])
    assert LabelCommand().config(args).input.corrections is None


# -- the round trip on Ray ----------------------------------------------------------------------------
@pytest.mark.ray
@pytest.mark.e2e
def test_rerun_picks_up_corrections_and_redoes_only_that_video(tmp_path):
    import pyarrow.parquet as pq
    import ray

    from hqseg_ray.export.parquet import video_parquet_path
    from hqseg_ray.pipeline import run_job
    from hqseg_ray.synth import write_dataset
    from hqseg_ray.synth.generate import generate_video
    from hqseg_ray.synth.dataset import video_seed
    from tests.pipeline.conftest import job_config

    manifest = write_dataset(tmp_path / "data", videos=2, frames=10, seed=21, size=(64, 96), n_objects=(1, 2))
    out = tmp_path / "out"
    config = job_config(str(manifest), out, "auto")  # the trained toy: a box prompt gives that object's mask
    a, b = [json.loads(line)["video_id"] for line in manifest.read_text().splitlines()]
    truth_a = generate_video(video_seed(21, 0), frames=10, size=(64, 96), n_objects=(1, 2))
    temp_dir = f"/tmp/hqc{os.getpid()}"
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    try:
        first = run_job(config, progress=False)
        assert first.ok == 2
        mtime_b = os.path.getmtime(video_parquet_path(out, b))

        # a reviewer's save on the page: a new object 9 on frame 6 of video a (what append_correction writes)
        obj = sorted(truth_a.objects)[0]
        box = truth_a.box(6, obj)
        append_correction(str(out / "corrections.jsonl"),
                          CorrectionRow(video_id=a, prompts=[P(object_id=9, frame=6, box=box)], source="review-page"))
        corrected = config.model_copy(update={"input": config.input.model_copy(
            update={"corrections": str(out / "corrections.jsonl")})})
        second = run_job(corrected, progress=False)
        assert (second.ok, second.skipped) == (1, 1), second.text()
        assert os.path.getmtime(video_parquet_path(out, b)) == mtime_b  # b resumed untouched
        rows = pq.read_table(video_parquet_path(out, a)).to_pylist()
        on6 = {r["object_id"]: r["source"] for r in rows if r["frame_index"] == 6}
        assert on6.get(9) == "prompt", on6  # the correction became a seed of the rerun
        assert any(r["object_id"] == 9 and r["frame_index"] != 6 for r in rows)  # ...and was tracked from it

        third = run_job(corrected, progress=False)  # nothing changed since: everything resumes
        assert (third.ok, third.skipped) == (0, 2), third.text()
    finally:
        ray.shutdown()
