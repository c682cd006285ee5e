"""segment_video (chunked, bounded memory) and ``hqseg segment`` end to end."""

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hqseg_ray.config import ChunkingConfig, TrackingConfig
from hqseg_ray.masks import mask_iou, rle_decode
from hqseg_ray.track import segment_video
from tests.track.helpers import OracleEngine, frame0_prompts, synthetic_video


@pytest.fixture(scope="module")
def folder_video(tmp_path_factory):
    """A lossless frame folder (so the oracle recognises decoded frames) and its ground truth."""
    v = synthetic_video(8, frames=30, size=(96, 128), n_objects=(3, 3), pan=False)
    d = tmp_path_factory.mktemp("frames")
    for t, f in enumerate(v.frames):
        Image.fromarray(f).save(d / f"{t:05d}.png")
    return str(d), v


def test_segment_video_chunks_stitches_and_keeps_ids(folder_video):
    path, v = folder_video
    eng = OracleEngine(v.annotations, v.frames)
    stats = {}
    out = list(segment_video(path, frame0_prompts(v), eng, TrackingConfig(),
                             chunking=ChunkingConfig(chunk_frames=12, overlap=4), video_id="v", stats=stats))
    assert [fr.frame_index for fr in out] == list(range(30))
    assert stats["chunks"] == 4 and stats["frames"] == 30 and stats["stitch_relayed"] > 0
    assert out[3].pts_time == pytest.approx(3 / 30)
    for oid in v.objects:
        ious = [mask_iou(rle_decode(fr.rles[fr.object_ids.index(oid)]), v.mask(fr.frame_index, oid))
                if oid in fr.object_ids else 0.0 for fr in out]
        assert np.mean(ious) > 0.9, (oid, np.round(ious, 2))


def test_segment_video_reads_one_chunk_at_a_time(folder_video, monkeypatch):
    import hqseg_ray.video as video_mod

    path, v = folder_video
    calls = []
    real = video_mod.iter_frames
    monkeypatch.setattr(video_mod, "iter_frames", lambda *a, **k: calls.append(a[1:3]) or real(*a, **k))
    gen = segment_video(path, frame0_prompts(v), OracleEngine(v.annotations, v.frames), None,
                        chunking=ChunkingConfig(chunk_frames=12, overlap=4))
    first = next(gen)
    assert first.frame_index == 0 and calls == [(0, 12)]  # later chunks not read yet
    rest = list(gen)
    assert len(rest) == 29 and len(calls) == 4


def test_segment_video_bad_input(folder_video):
    path, v = folder_video
    eng = OracleEngine(v.annotations, v.frames)
    with pytest.raises(ValueError, match="no prompts and auto.enabled is false"):
        list(segment_video(path, [], eng, None, video_id="v"))
    with pytest.raises(ValueError, match="frame 99 is outside the video"):
        list(segment_video(path, [{"object_id": 1, "frame": 99, "box": [1, 1, 9, 9]}], eng, None))
    with pytest.raises(ValueError, match="x2 < x1"):
        list(segment_video(path, [{"object_id": 1, "frame": 0, "box": [9, 1, 1, 9]}], eng, None))


def test_hqseg_segment_cli_writes_parquet_and_overlay(tmp_path):
    """Plumbing of the command with a random-weight model (masks meaningless, files real)."""
    from hqseg_ray.cli import main
    from hqseg_ray.model.registry import save_spec_checkpoint
    from hqseg_ray.synth.dataset import write_mp4
    from tests.model.helpers import SMALL_SPEC, small_sam

    ckpt = tmp_path / "small.pt"
    save_spec_checkpoint(small_sam(), SMALL_SPEC, ckpt)
    v = synthetic_video(3, frames=10, size=(64, 96), n_objects=(2, 2))
    mp4 = write_mp4(v.frames, tmp_path / "clip.mp4")
    row = tmp_path / "row.json"
    prompts = frame0_prompts(v)
    prompts[0]["label"] = "car"
    row.write_text(json.dumps({"video": str(mp4), "video_id": "clip", "prompts": prompts}))
    out = tmp_path / "out"
    rc = main(["segment", str(mp4), "--prompts", str(row), "--out", str(out), "--overlay",
               "--set", "model.type=toy", "--set", f"model.checkpoint={ckpt}", "--set", "model.device=cpu",
               "--set", "chunking.chunk_frames=6", "--set", "chunking.overlap=2",
               "--set", "tracker.min_score=0", "--set", "tracker.min_area_ratio=0", "--set", "tracker.max_area_growth=1e9"])
    assert rc == 0
    table = pq.read_table(out / "masks" / "video_id=clip" / "part-0.parquet")
    for col in ("video_id", "frame_index", "pts_time", "object_id", "score", "rle_counts", "rle_size",
                "bbox_xywh", "area", "source", "chunk_index"):
        assert col in table.column_names
    assert table.num_rows > 0 and set(table.column("video_id").to_pylist()) == {"clip"}
    labels = dict(zip(table.column("object_id").to_pylist(), table.column("label").to_pylist()))
    assert labels.get(prompts[0]["object_id"], "car") == "car" and "car" in labels.values()
    assert os.path.getsize(out / "overlay" / "clip.mp4") > 0


def test_hqseg_segment_cli_reports_bad_prompt_file(tmp_path, capsys):
    from hqseg_ray.cli import main

    bad = tmp_path / "row.json"
    bad.write_text("{not json")
    assert main(["segment", "x.mp4", "--prompts", str(bad), "--out", str(tmp_path)]) == 2
    assert "is not valid JSON" in capsys.readouterr().err
