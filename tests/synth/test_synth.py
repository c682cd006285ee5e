"""Synthetic scenes and videos: deterministic, exact ground truth, readable output files."""

import json

import av
import numpy as np
from PIL import Image

from hqseg_ray.synth import SHAPES, generate_scene, generate_video, write_dataset


def test_scene_is_deterministic_and_masks_are_disjoint():
    a, b = generate_scene(3), generate_scene(3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert a.image.dtype == np.uint8 and a.image.shape == (256, 256, 3)
    assert a.masks.sum(0).max() <= 1  # visible parts never overlap
    assert set(a.shapes) <= set(SHAPES)
    assert not np.array_equal(generate_scene(4).image, a.image)


def test_every_shape_appears():
    seen = set()
    for s in range(40):
        seen |= set(generate_scene(s).shapes)
    assert seen == set(SHAPES)


def test_video_objects_visible_on_frame_0_and_move():
    v = generate_video(11, frames=12, size=(60, 80), n_objects=(3, 4))
    assert v.frames.shape == (12, 60, 80, 3) and v.annotations.shape == (12, 60, 80)
    assert len(v.objects) >= 1
    for oid in v.objects:
        assert v.box(0, oid) is not None
    assert not np.array_equal(v.annotations[0], v.annotations[-1])
    assert np.array_equal(generate_video(11, frames=12, size=(60, 80), n_objects=(3, 4)).frames, v.frames)


def test_write_dataset_layout(tmp_path):
    manifest = write_dataset(tmp_path, videos=2, frames=5, seed=7, size=(48, 64), jpeg=True, keyframe_every=2)
    rows = [json.loads(line) for line in open(manifest)]
    assert [r["video_id"] for r in rows] == ["synth_s7_000", "synth_s7_001"]
    krows = [json.loads(line) for line in open(tmp_path / "manifest_keyframes.jsonl")]
    for row, krow in zip(rows, krows):
        with av.open(row["video"]) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 5 and frames[0].shape == (48, 64, 3)
        ann = Image.open(tmp_path / "Annotations" / row["video_id"] / "00000.png")
        assert ann.mode == "P"
        ids = np.array(ann)
        for p in row["prompts"]:
            assert p["frame"] == 0
            ys, xs = np.nonzero(ids == p["object_id"])
            assert p["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert {p["frame"] for p in krow["prompts"]} <= {0, 2, 4}
        assert (tmp_path / "JPEGImages" / row["video_id"] / "00004.jpg").is_file()
