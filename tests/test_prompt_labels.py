"""Object labels (category names) in prompts and manifests, and how they reach the job's rows."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hqseg_ray.prompts import ManifestRow, PromptValidationError, load_manifest, validate_prompts


def _row(**kw):
    base = {"video": "a.mp4", "video_id": "a",
            "prompts": [{"object_id": 1, "frame": 0, "box": [1, 1, 5, 5], "label": "car"},
                        {"object_id": 1, "frame": 3, "box": [1, 1, 5, 5]},
                        {"object_id": 2, "frame": 0, "box": [1, 1, 5, 5]}]}
    return ManifestRow.model_validate({**base, **kw})


def test_labels_from_prompts_and_the_row_map():
    row = _row(labels={"2": "person"}, default_label="thing")
    validate_prompts(row)
    assert row.object_labels() == {1: "car", 2: "person"} and row.default_label == "thing"


@pytest.mark.parametrize("kw, message", [
    ({"labels": {"1": "truck"}}, "object 1 has 2 labels ('truck' by labels[1]; 'car' by prompt 0)"),
    ({"labels": {"2": " person"}}, "labels[2]: label ' person' must be a non-empty name"),
    ({"default_label": ""}, "default_label: label '' must be a non-empty name"),
])
def test_label_problems_are_reported_with_the_rest(kw, message):
    row = _row(**kw)
    with pytest.raises(PromptValidationError) as err:
        validate_prompts(row)
    assert message in str(err.value)


def test_two_prompts_disagreeing_on_a_label():
    row = _row(prompts=[{"object_id": 1, "frame": 0, "box": [1, 1, 5, 5], "label": "car"},
                        {"object_id": 1, "frame": 4, "box": [1, 1, 5, 5], "label": "bus"}])
    with pytest.raises(PromptValidationError, match=r"object 1 has 2 labels \('car' by prompt 0; 'bus' by prompt 1\)"):
        validate_prompts(row)


def test_unknown_keys_are_still_refused():
    with pytest.raises(ValueError, match="lable"):
        ManifestRow.model_validate({"video": "a.mp4", "prompts": [{"object_id": 1, "box": [1, 1, 2, 2],
                                                                   "lable": "car"}]})


def test_parquet_manifest_labels_as_json_string_and_map(tmp_path):
    prompts = json.dumps([{"object_id": 1, "frame": 0, "box": [1, 1, 5, 5]}])
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"video": ["a.mp4", "b.mp4"], "video_id": ["a", "b"], "prompts": [prompts, prompts],
                             "labels": [json.dumps({"1": "car"}), None],
                             "default_label": [None, "thing"]}), path)
    a, b = load_manifest(str(path))
    assert a.object_labels() == {1: "car"} and b.object_labels() == {} and b.default_label == "thing"
    mpath = tmp_path / "map.parquet"
    pq.write_table(pa.table({"video": ["a.mp4"], "prompts": [prompts],
                             "labels": pa.array([[(1, "car")]], pa.map_(pa.int64(), pa.string()))}), mpath)
    (m,) = load_manifest(str(mpath))
    assert m.object_labels() == {1: "car"}


def test_plan_stage_carries_labels_to_every_chunk(tmp_path):
    from hqseg_ray.config import JobConfig
    from hqseg_ray.pipeline.job import manifest_rows
    from hqseg_ray.pipeline.stages import PlanStage
    from hqseg_ray.synth import write_dataset

    manifest = write_dataset(tmp_path, videos=1, frames=20, seed=3, size=(48, 64), n_objects=(1, 1))
    row = json.loads(manifest.read_text().splitlines()[0])
    row["prompts"][0]["label"] = "car"
    row["default_label"] = "thing"
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    config = JobConfig.model_validate({"model": {"type": "toy"}, "input": {"manifest": str(tmp_path / "m.jsonl")},
                                       "chunking": {"chunk_frames": 8, "overlap": 2}})
    (job_row,) = manifest_rows(config)
    chunks = PlanStage(config)(job_row)
    assert len(chunks) >= 2 and all(c["error"] == "" for c in chunks)
    oid = row["prompts"][0]["object_id"]
    for c in chunks:
        assert json.loads(c["labels_json"]) == {"labels": {str(oid): "car"}, "default": "thing", "detections": []}


def test_detector_box_labels_follow_the_matched_track():
    """A detector box's label goes to the object whose mask box overlaps it most on its frame; the
    majority of an object's detector labels wins; an explicit label always wins."""
    import numpy as np

    from hqseg_ray.export.labels import detection_boxes, resolve_labels
    from hqseg_ray.masks import rle_encode
    from hqseg_ray.track.types import FrameResult

    def box(x, y):
        m = np.zeros((40, 60), bool)
        m[y:y + 10, x:x + 10] = True
        return rle_encode(m)

    frames = [FrameResult(t, [5, 6, 9], [box(0, 0), box(30, 20), box(45, 0)], [0.9] * 3, ["prompt"] * 3, 0)
              for t in range(3)]
    row = _row(prompts=[{"frame": 0, "box": [0, 0, 10, 10], "label": "dog"},     # -> 5
                        {"frame": 1, "box": [1, 1, 11, 11], "label": "cat"},     # -> 5
                        {"frame": 2, "box": [0, 0, 10, 10], "label": "cat"},     # -> 5: cat 2, dog 1
                        {"frame": 0, "box": [30, 20, 40, 30], "label": "bird"},  # -> 6, but 6 is labelled
                        {"frame": 0, "box": [45, 0, 55, 10], "label": "bus"},    # -> 9
                        {"frame": 1, "box": [0, 30, 5, 35], "label": "ghost"},   # overlaps nothing
                        {"object_id": 6, "frame": 0, "box": [30, 20, 40, 30], "label": "horse"}])
    validate_prompts(row)
    dets = detection_boxes(row.prompts)
    assert len(dets) == 6
    assert resolve_labels(frames, row.object_labels(), dets) == {5: "cat", 6: "horse", 9: "bus"}
    assert resolve_labels(frames, {}, []) == {}
