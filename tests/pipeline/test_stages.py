"""Pipeline stages called directly on rows (no Ray cluster)."""

import json

import numpy as np
import pytest

from hqseg_ray.config import JobConfig
from hqseg_ray.pipeline.stages import DecodeStage, PlanStage, rebatch, require, unbatch


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from hqseg_ray.synth import write_dataset

    root = tmp_path_factory.mktemp("synth")
    manifest = write_dataset(root, videos=1, frames=20, seed=3, size=(96, 128))
    row = json.loads(manifest.read_text().splitlines()[0])
    return root, row


def _row(video, video_id, prompts):
    return {"video": video, "video_id": video_id, "prompts_json": json.dumps(prompts), "auto": False}


def _config(**chunking):
    return JobConfig.model_validate({"model": {"type": "toy"}, "chunking": {"chunk_frames": 8, "overlap": 2, **chunking}})


def test_plan_cuts_chunks_and_keeps_prompts(synth):
    _, row = synth
    chunks = PlanStage(_config())(_row(row["video"], row["video_id"], row["prompts"]))
    assert len(chunks) >= 3 and all(c["error"] == "" for c in chunks)
    assert chunks[0]["start"] == 0 and chunks[-1]["stop"] == 20
    for a, b in zip(chunks, chunks[1:]):
        assert b["start"] == a["stop"] - a["overlap_next"]
    assert json.loads(chunks[0]["prompts_json"]) and all(c["num_chunks"] == len(chunks) for c in chunks)
    info = json.loads(chunks[0]["info_json"])
    assert info["num_frames"] == 20 and info["width"] == 128


@pytest.mark.parametrize("video, prompts, message", [
    ("/no/such/video.mp4", [{"object_id": 1, "frame": 0, "box": [1, 1, 5, 5]}], "no/such/video.mp4"),
    (None, [{"object_id": 1, "frame": 99, "box": [1, 1, 5, 5]}], "frame 99"),
    (None, [{"object_id": 1, "frame": 0, "box": [50, 1, 5, 5]}], "x2 < x1"),
    (None, [], "no prompts and automatic mode is off"),
])
def test_plan_failure_is_one_failed_row(synth, video, prompts, message):
    _, row = synth
    out = PlanStage(_config())(_row(video or row["video"], "v", prompts))
    assert len(out) == 1 and out[0]["chunk_index"] == -1
    assert out[0]["error"].startswith("plan:") and message in out[0]["error"]


def test_corrupt_video_fails_in_plan(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video at all" * 10)
    out = PlanStage(_config())(_row(str(bad), "bad", [{"object_id": 1, "frame": 0, "box": [1, 1, 5, 5]}]))
    assert out[0]["error"] and "bad.mp4" in out[0]["error"]


def test_decode_resizes_to_model_input_and_keeps_indices(synth):
    _, row = synth
    chunks = PlanStage(_config())(_row(row["video"], row["video_id"], row["prompts"]))
    dec = DecodeStage(_config(), 64)(chunks[1])
    assert dec["error"] == ""
    assert dec["frames"].dtype == np.uint8 and dec["frames"].shape[1:] == (48, 64, 3)
    assert list(dec["frame_indices"]) == list(range(chunks[1]["start"], chunks[1]["stop"]))
    assert dec["original_size"] == [96, 128] and len(dec["pts_times"]) == len(dec["frame_indices"])


def test_failed_rows_pass_through_decode():
    row = {"video": "x", "video_id": "x", "start": 0, "stop": 0, "stride": 1, "info_json": "{}", "error": "plan: boom"}
    out = DecodeStage(_config(), 64)(row)
    assert out["error"] == "plan: boom" and len(out["frames"]) == 0


def test_missing_columns_name_the_stage():
    with pytest.raises(KeyError, match="stage 'decode'.*'stop'"):
        DecodeStage(_config(), 64)({"video": "x", "start": 0, "stride": 1, "info_json": "{}", "error": None})
    with pytest.raises(KeyError, match="stage 'x'"):
        require("x", {}, ["a"])


def test_batch_round_trip():
    rows = [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert unbatch(rebatch(rows)) == rows


def test_metrics_are_a_no_op_outside_ray():
    from hqseg_ray.pipeline.metrics import JobMetrics

    m = JobMetrics()
    m.chunk("segment", 3, 0.1)
    m.video("failed")
    assert m._metrics() is None


def test_chunk_rows_carry_only_their_slice_of_the_pts_table(tmp_path):
    """Issue 18 item 4: a long video's chunk rows do not each carry the whole pts table, and a
    chunk decoded from its slice gives the frames (and pts) of a whole-video decode."""
    from hqseg_ray.pipeline.stages import chunk_info
    import av

    from hqseg_ray.video import probe_video, read_frames

    path = tmp_path / "long.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), mode="w") as container:  # a keyframe every 10 frames
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.gop_size = 10
        stream.options = {"bf": "2", "sc_threshold": "0"}
        for t in range(90):
            frame = np.full((64, 96, 3), 40, np.uint8)
            frame[10:30, t % 60:t % 60 + 20] = rng.integers(0, 255, 3)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    row = {"video": str(path), "video_id": "long", "prompts": [{"object_id": 3, "frame": 0, "box": [1, 1, 20, 20]}]}
    cfg = _config()
    cfg.chunking.chunk_frames, cfg.chunking.overlap = 16, 4
    chunks = PlanStage(cfg)(_row(row["video"], row["video_id"], row["prompts"]))
    assert len(chunks) >= 5
    info = probe_video(row["video"])
    for c in chunks:
        assert "pts" not in json.loads(c["info_json"])
        table = json.loads(c["table_json"])
        assert len(table["pts"]) <= c["stop"] - table["offset"] + 1 < info.num_frames
        assert table["offset"] <= c["start"]
        sub, off = chunk_info(c["info_json"], c["table_json"])
        assert sub.pts_time(c["start"] - off) == pytest.approx(info.pts_time(c["start"]))
    last = DecodeStage(cfg, 64)(chunks[-2])
    want, idx, pts = read_frames(row["video"], chunks[-2]["start"], chunks[-2]["stop"], info=info)
    assert last["error"] == "" and list(last["frame_indices"]) == list(idx)
    np.testing.assert_allclose(last["pts_times"], pts)
    from hqseg_ray.model.engine import resize_longest_side

    assert np.array_equal(last["frames"], np.stack([resize_longest_side(f, 64) for f in want]))
    assert json.loads(chunks[0]["reserved_ids_json"]) == sorted({p["object_id"] for p in row["prompts"]})
