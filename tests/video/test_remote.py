"""The object-store path (pyarrow.fs file objects handed to PyAV), on a local pyarrow filesystem."""

from __future__ import annotations

import shutil

import cv2
from pyarrow import fs

from hqseg_ray.video import plan_chunks, probe_video, read_frames

from .helpers import decode_index, pattern


def test_video_and_frame_folder_through_a_pyarrow_filesystem(make_video, tmp_path):
    (tmp_path / "bucket" / "seq").mkdir(parents=True)
    shutil.copy(make_video("long_gop12.mp4", n=300, gop=12, bframes=2), tmp_path / "bucket" / "clip.mp4")
    for i in (0, 1, 2, 10):
        cv2.imwrite(str(tmp_path / "bucket" / "seq" / f"{i}.png"), cv2.cvtColor(pattern(i), cv2.COLOR_RGB2BGR))
    store = fs.SubTreeFileSystem(str(tmp_path), fs.LocalFileSystem())

    info = probe_video("s3://bucket/clip.mp4", filesystem=store)
    assert info.num_frames == 300 and info.keyframes == list(range(0, 300, 12))
    last = plan_chunks(info, [], 64, 8)[-1]
    stats: dict = {}
    frames, idx, _ = read_frames(info.uri, last.start, last.stop, info=info, stats=stats, filesystem=store)
    assert idx.tolist() == list(range(last.start, 300)) and [decode_index(f) for f in frames] == idx.tolist()
    assert stats["decoded"] <= 300 - last.start + 12

    seq = probe_video("gs://bucket/seq", filesystem=store)
    assert seq.kind == "frames" and [f.rsplit("/", 1)[-1] for f in seq.frame_files] == ["0.png", "1.png", "2.png", "10.png"]
    frames, idx, _ = read_frames("gs://bucket/seq", 2, 4, info=seq, filesystem=store)
    assert [decode_index(f) for f in frames] == [2, 10]
