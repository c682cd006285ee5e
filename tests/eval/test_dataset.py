"""evaluate_dataset on the project's Parquet layout against DAVIS-layout ground truth."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hqseg_ray.eval import evaluate_dataset, read_gt_video
from hqseg_ray.eval.command import EvalCommand
from hqseg_ray.masks import rle_encode
from hqseg_ray.synth import generate_video
from hqseg_ray.synth.dataset import write_annotation


def write_parquet(path, video_id, masks_by_frame):
    rows = {"video_id": [], "frame_index": [], "object_id": [], "score": [], "rle_counts": [], "rle_size": []}
    for t, objs in masks_by_frame.items():
        for oid, m in objs.items():
            rle = rle_encode(m)
            rows["video_id"].append(video_id)
            rows["frame_index"].append(t)
            rows["object_id"].append(oid)
            rows["score"].append(0.9)
            rows["rle_counts"].append(rle["counts"])
            rows["rle_size"].append(rle["size"])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path)


@pytest.fixture
def gt_and_video(tmp_path):
    v = generate_video(5, frames=4, size=(48, 64), n_objects=(2, 3), video_id="v1")
    d = tmp_path / "gt" / "Annotations" / "v1"
    d.mkdir(parents=True)
    for t, a in enumerate(v.annotations):
        write_annotation(a, d / f"{t:05d}.png")
    return tmp_path / "gt", v


def test_perfect_parquet_scores_one(tmp_path, gt_and_video):
    gt, v = gt_and_video
    masks = {t: {oid: v.mask(t, oid) for oid in v.objects} for t in range(4)}
    write_parquet(tmp_path / "out" / "masks" / "video_id=v1" / "part.parquet", "v1", masks)
    r = evaluate_dataset(tmp_path / "out", gt)
    assert r["J"] == 1.0 and r["F"] == 1.0 and r["id_switches"] == 0
    assert r["objects"] == len(v.objects)


def test_swapped_ids_and_cli(tmp_path, gt_and_video, capsys):
    gt, v = gt_and_video
    ids = sorted(v.objects)
    a, b = ids[0], ids[1]
    masks = {t: {oid: v.mask(t, oid) for oid in v.objects} for t in range(4)}
    for t in (2, 3):  # identities swapped from frame 2 on
        masks[t][a], masks[t][b] = masks[t][b], masks[t][a]
    f = tmp_path / "single.parquet"
    write_parquet(f, "v1", masks)
    r = evaluate_dataset(f, gt)
    assert r["id_switches"] >= 2 and r["J"] < 1.0
    cmd = EvalCommand()
    import argparse

    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    assert cmd.run(p.parse_args([str(f), str(gt)])) == 0
    assert "ALL" in capsys.readouterr().out


def test_match_scores_automatic_mode_output_and_cli(tmp_path, gt_and_video, capsys):
    """Predicted ids unrelated to the ground truth's (automatic mode) plus a background mask:
    ``match`` assigns them first and scores the objects perfectly; without it they score 0."""
    gt, v = gt_and_video
    masks = {t: {100 + oid: v.mask(t, oid) for oid in v.objects} for t in range(4)}
    for t in range(4):
        masks[t][999] = v.annotations[t] == 0
    f = tmp_path / "auto.parquet"
    write_parquet(f, "v1", masks)
    assert evaluate_dataset(f, gt)["J"] < 0.5  # by their own ids (frames where an object is absent score 1)
    r = evaluate_dataset(f, gt, match=True)
    assert r["J"] == 1.0 and r["F"] == 1.0 and r["objects"] == len(v.objects)
    assert r["videos"]["v1"]["matched"] == {100 + oid: oid for oid in v.objects}
    import argparse

    cmd = EvalCommand()
    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    assert cmd.run(p.parse_args([str(f), str(gt), "--match"])) == 0
    assert "1.000" in capsys.readouterr().out.splitlines()[-1]


def test_davis2016_binary_annotations(tmp_path):
    d = tmp_path / "Annotations" / "480p" / "cow"
    d.mkdir(parents=True)
    m = np.zeros((20, 30), np.uint8)
    m[5:10, 5:15] = 255
    Image.fromarray(m, mode="L").save(d / "00000.png")
    gt = read_gt_video(d)
    assert set(np.unique(gt[0])) == {0, 1}
    r = evaluate_dataset({"cow": {0: {1: m > 0}}}, tmp_path)
    assert r["JF"] == 1.0


def test_missing_ground_truth_is_an_error(tmp_path, gt_and_video):
    gt, _ = gt_and_video
    with pytest.raises(ValueError, match="no ground truth"):
        evaluate_dataset({}, gt, videos=["nope"])
