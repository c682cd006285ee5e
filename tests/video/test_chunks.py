"""Chunk planning: coverage, exact overlaps, seeded starts, keyframe alignment, real reads."""

from __future__ import annotations

import itertools

import pytest

from hqseg_ray.prompts import PromptSpec
from hqseg_ray.video import ChunkSpec, VideoInfo, plan_chunks, probe_video, read_frames

from .helpers import decode_index


def fake_info(n: int, gop: int = 250) -> VideoInfo:
    return VideoInfo(uri="s3://b/clips/my clip.mp4", kind="video", num_frames=n, fps=25.0, time_base=1 / 25,
                     duration=n / 25, width=64, height=48, keyframes=list(range(0, n, gop)))


def check_plan(chunks: list[ChunkSpec], n: int, chunk_frames: int, overlap: int, stride: int = 1) -> None:
    grid = list(range(0, n, stride))
    assert chunks[0].start == 0 and chunks[-1].stop == n or chunks[-1].frame_indices[-1] == grid[-1]
    seen: list[int] = []
    for a, b in zip(chunks, chunks[1:]):
        assert b.start == a.stop - a.overlap_next
        shared = set(a.frame_indices) & set(b.frame_indices)
        assert len(shared) == overlap, (a, b)
        assert b.start > a.start
    for c in chunks:
        assert 1 <= c.num_processed <= chunk_frames
        assert c.num_chunks == len(chunks) and c.stride == stride
        seen += list(c.frame_indices)
    assert chunks[-1].overlap_next == 0
    # every processed frame once, plus each overlap once more
    assert sorted(set(seen)) == grid
    assert len(seen) == len(grid) + overlap * (len(chunks) - 1)
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))


@pytest.mark.parametrize("n,chunk_frames,overlap,stride,gop", [
    (1, 64, 8, 1, 250), (64, 64, 8, 1, 250), (65, 64, 8, 1, 250), (300, 64, 8, 1, 12), (300, 64, 8, 1, 250),
    (301, 16, 0, 1, 5), (100, 10, 9, 1, 7), (257, 32, 4, 2, 12), (90, 8, 2, 3, 9), (1000, 64, 8, 4, 30),
])
def test_plan_covers_every_frame_with_exact_overlaps(n, chunk_frames, overlap, stride, gop):
    chunks = plan_chunks(fake_info(n, gop), [], chunk_frames, overlap, stride)
    check_plan(chunks, n, chunk_frames, overlap, stride)
    assert chunks[0].video_id == "my_clip" and chunks[0].uri == "s3://b/clips/my clip.mp4"


def test_plan_with_many_prompt_layouts():
    for n, frames in itertools.product((50, 200), ([0], [0, 3], [10, 11, 12], [0, 57, 120, 121, 199], list(range(0, 200, 5)))):
        frames = [f for f in frames if f < n]
        prompts = [PromptSpec(object_id=1, frame=f, box=[0, 0, 4, 4]) for f in frames]
        for cf, ov in ((64, 8), (16, 4), (8, 7)):
            chunks = plan_chunks(fake_info(n, 12), prompts, cf, ov)
            check_plan(chunks, n, cf, ov)
            for c in chunks:
                assert sorted(p.frame for p in c.prompts) == [f for f in frames if c.start <= f < c.stop]
                assert c.seeded == (c.start in frames)


def test_chunk_starts_move_onto_prompt_frames():
    prompts = [{"frame": 0}, {"frame": 40}, {"frame": 90}, {"frame": 150}]
    chunks = plan_chunks(fake_info(200), prompts, chunk_frames=64, overlap=8, align_to_keyframes=False)
    # 40 and 90 are within reach (<= previous start + 56): chunks start seeded there, and the
    # chunk before ends 8 frames after them. 150 lies in the overlap tail of [90, 154): not a start.
    assert [(c.start, c.stop, c.seeded) for c in chunks] == [
        (0, 48, True), (40, 98, True), (90, 154, True), (146, 200, False)]
    assert [p["frame"] for p in chunks[3].prompts] == [150]


def test_keyframe_alignment_moves_starts_back_within_overlap():
    info = fake_info(300, gop=12)
    aligned = plan_chunks(info, [], 64, 8, align_to_keyframes=True)
    plain = plan_chunks(info, [], 64, 8, align_to_keyframes=False)
    assert [c.start for c in plain][:3] == [0, 56, 112]
    assert [c.start for c in aligned][:3] == [0, 48, 96]  # latest keyframe in [n - 8, n]
    assert all(c.start % 12 == 0 for c in aligned)


def test_bad_arguments_and_prompts_are_errors():
    info = fake_info(100)
    with pytest.raises(ValueError, match="overlap < chunk_frames"):
        plan_chunks(info, [], 8, 8)
    with pytest.raises(ValueError, match=r"prompt 1: frame 13 is not on the stride-2 grid.*prompt 2: frame 100 is outside"):
        plan_chunks(info, [{"frame": 0}, {"frame": 13}, {"frame": 100}], 16, 4, stride=2)


def test_to_dict_is_plain():
    import json

    c = plan_chunks(fake_info(20), [PromptSpec(object_id=2, frame=3, points=[[1, 2]], labels=[1])], 64, 8)[0]
    d = json.loads(json.dumps(c.to_dict()))
    assert d["prompts"][0]["object_id"] == 2 and d["stop"] == 20


@pytest.mark.parametrize("stride", [1, 3])
def test_reading_every_chunk_is_frame_exact(make_video, stride):
    path = make_video("long_gop12.mp4", n=300, gop=12, bframes=2)
    info = probe_video(str(path))
    prompts = [{"frame": 0}, {"frame": 99}, {"frame": 201}]
    chunks = plan_chunks(info, prompts, chunk_frames=40, overlap=6, stride=stride)
    check_plan(chunks, 300, 40, 6, stride)
    for c in chunks:
        stats: dict = {}
        frames, idx, _ = read_frames(str(path), c.start, c.stop, stride=c.stride, info=info, stats=stats)
        assert idx.tolist() == list(c.frame_indices)
        assert [decode_index(f) for f in frames] == idx.tolist()
        assert stats["decoded"] <= c.stop - c.start + 12  # never more than one GOP before the chunk
