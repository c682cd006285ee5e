"""A labelled manifest row through the job's stages, called directly (no Ray cluster): plan ->
decode -> segment (toy model on the CPU) -> stitch/write. The masks carry the labels, the review
queue is written beside them, and the exports name the categories."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_labelled_video_through_the_stages(tmp_path, monkeypatch):
    from hqseg_ray.config import JobConfig
    from hqseg_ray.export.formats import export_all
    from hqseg_ray.export.review import load_review
    from hqseg_ray.model.registry import model_input_size
    from hqseg_ray.pipeline.job import manifest_rows
    from hqseg_ray.pipeline.segment import SegmentStage
    from hqseg_ray.pipeline.stages import DecodeStage, PlanStage, rebatch, unbatch
    from hqseg_ray.pipeline.write import VideoWriter
    from hqseg_ray.synth import write_dataset

    manifest = write_dataset(tmp_path / "data", videos=1, frames=12, seed=1, size=(96, 128), n_objects=(2, 2))
    row = json.loads(manifest.read_text().splitlines()[0])
    first, second = row["prompts"][0]["object_id"], row["prompts"][1]["object_id"]
    row["prompts"][0]["label"] = "car"
    row["labels"] = {str(second): "person"}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "out"
    config = JobConfig.model_validate({
        "model": {"type": "toy", "device": "cpu"}, "input": {"manifest": str(tmp_path / "m.jsonl")},
        "chunking": {"chunk_frames": 8, "overlap": 2, "stride": 2},
        "compute": {"torch_threads": 1}, "output": {"path": str(out)}})
    cfg_json = config.model_dump_json()
    # the stage names its worker from Ray's runtime context, which would start a Ray instance here
    monkeypatch.setattr("hqseg_ray.pipeline.segment._node_id", lambda: "test")
    monkeypatch.setattr("hqseg_ray.pipeline.segment._gpu_ids", lambda: "")
    (job_row,) = manifest_rows(config)
    chunks = PlanStage(config)(job_row)  # 12 frames at stride 2: one chunk of 6 processed frames
    segment = SegmentStage(cfg_json)
    m = config.model
    decode = DecodeStage(config, model_input_size(m.type, m.checkpoint, m.checkpoint_sha256, m.cache_dir))
    seg_rows = [segment.process(decode(c)) for c in chunks]
    writer = VideoWriter(cfg_json)
    statuses = unbatch(writer(rebatch(seg_rows, list(seg_rows[0]))))
    (status,) = statuses
    assert status["status"] == "ok", status["error"]

    table = pq.read_table(status["path"])
    labels = dict(zip(table.column("object_id").to_pylist(), table.column("label").to_pylist()))
    assert labels[first] == "car" and labels[second] == "person"
    assert set(table.column("frame_index").to_pylist()) <= set(range(0, 12, 2))

    review = load_review(str(out), row["video_id"], rebuild=False)  # written by the job
    assert review["stride"] == 2 and review["num_frames"] == 12
    assert {o["object_id"]: o["label"] for o in review["objects"]}[first] == "car"

    paths = export_all(str(out), ["coco", "cvat"])
    coco = json.load(open(os.path.join(paths["coco"], f"{row['video_id']}.json")))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert {"car", "person"} <= set(names.values())
    assert [i["frame_index"] for i in coco["images"]] == list(range(0, 12, 2))
    for a in coco["annotations"]:
        assert names[a["category_id"]] == (labels[a["object_id"]] or "object")
