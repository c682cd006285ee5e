"""Frame folders (DAVIS layout, natural order) and single images behave like videos."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from hqseg_ray.video import VideoError, plan_chunks, probe_video, read_frames

from .helpers import decode_index, pattern


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("frames")
    for i in range(12):  # unpadded names: natural order is 0, 1, ..., 10, 11 (not 0, 1, 10, 11, 2)
        cv2.imwrite(str(root / f"f{i}.png"), cv2.cvtColor(pattern(i), cv2.COLOR_RGB2BGR))
    (root / "notes.txt").write_text("ignored")
    return root


def test_folder_natural_order(png_folder):
    info = probe_video(str(png_folder))
    assert (info.kind, info.num_frames, info.width, info.height, info.fps) == ("frames", 12, 64, 48, 30.0)
    assert info.keyframes == list(range(12))
    frames, idx, times = read_frames(str(png_folder), 2, 12, stride=3, info=info)
    assert idx.tolist() == [2, 5, 8, 11] and [decode_index(f) for f in frames] == [2, 5, 8, 11]
    np.testing.assert_allclose(times, idx / 30.0)
    check = plan_chunks(info, [{"frame": 5}], chunk_frames=4, overlap=1)
    assert any(c.start == 5 and c.seeded for c in check)


def test_single_image(png_folder):
    uri = str(png_folder / "f7.png")
    info = probe_video(uri)
    assert (info.kind, info.num_frames, info.codec) == ("image", 1, "png")
    frames, idx, _ = read_frames(uri, 0, 1, size=32)
    assert frames.shape == (1, 24, 32, 3) and idx.tolist() == [0]


def test_folder_without_images_and_mixed_sizes(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="folder without images"):
        probe_video(str(tmp_path / "empty"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "0.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(mixed / "1.png"), np.zeros((8, 9, 3), np.uint8))
    with pytest.raises(VideoError, match=r"frame 1 .* is 9x8, the first frame is 8x8"):
        read_frames(str(mixed))
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a jpeg")
    with pytest.raises(VideoError, match="not a readable image"):
        probe_video(str(bad))


@pytest.mark.parametrize("seq,count", [("car-shadow", 40), ("blackswan", 50)])
def test_davis_folders(davis_dir, seq, count):
    folder = os.path.join(davis_dir, "JPEGImages", "480p", seq)
    info = probe_video(folder)
    assert (info.num_frames, info.width, info.height) == (count, 854, 480)
    assert [os.path.basename(f) for f in info.frame_files] == [f"{i:05d}.jpg" for i in range(count)]
    frames, idx, _ = read_frames(folder, count - 3, count, info=info)
    assert frames.shape == (3, 480, 854, 3) and idx.tolist() == list(range(count - 3, count))
    want = cv2.cvtColor(cv2.imread(os.path.join(folder, f"{count - 1:05d}.jpg")), cv2.COLOR_BGR2RGB)
    assert np.array_equal(frames[-1], want)
    small, _, _ = read_frames(folder, 0, 2, size=427, info=info)
    assert small.shape == (2, 240, 427, 3)
