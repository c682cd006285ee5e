"""The one chunk-sequence driver (hqseg_ray/track/driver.py): its per-chunk step, its per-video
stitch step in any arrival order, and the reserved ids every caller now gets."""

import asyncio
import functools

import numpy as np
import pytest

from hqseg_ray.config import TrackingConfig
from hqseg_ray.track import track_chunk
from hqseg_ray.track.driver import ChunkSequence, VideoStitch, reserved_ids, track_step
from hqseg_ray.video import ChunkSpec
from tests.track.helpers import OracleEngine, frame0_prompts, synthetic_video


@pytest.fixture(scope="module")
def video():
    return synthetic_video(3, frames=30, size=(64, 96), n_objects=(3, 3), pan=False)


def _specs(n=30, chunk=12, overlap=4, prompts=()):
    out, s, k = [], 0, 0
    while True:
        e = min(s + chunk, n)
        out.append(ChunkSpec("v", "mem", k, 0, s, e, 1, 0 if e == n else overlap,
                             [p for p in prompts if s <= p["frame"] < e]))
        if e == n:
            break
        s, k = e - overlap, k + 1
    for c in out:
        c.num_chunks = len(out)
    return out


def _frames_of(video):
    return lambda c: (video.frames[c.start:c.stop], np.arange(c.start, c.stop), np.arange(c.start, c.stop) / 30.0)


def test_reserved_ids_come_from_prompts_with_an_object_id():
    assert reserved_ids([{"object_id": 4, "frame": 0}, {"frame": 2}, {"object_id": 2, "frame": 9}]) == [2, 4]


def test_carry_is_passed_only_with_the_relay():
    seen = {}

    def track(frames, idx, prompts, cfg, **kw):
        seen.update(kw)

    spec = ChunkSpec("v", "mem", 2, 5, 10, 20, 1, 4, [])
    track_step(track, None, None, spec, TrackingConfig(), {"objects": []}, video_id="v", original_size=(4, 4))
    assert seen["carry_in"] == {"objects": []} and seen["chunk_index"] == 2 and seen["overlap_next"] == 4
    cfg = TrackingConfig.model_validate({"stitch": {"mechanism": "auto_match"}})
    track_step(track, None, None, spec, cfg, {"objects": []}, video_id="v", original_size=(4, 4))
    assert seen["carry_in"] is None


def test_sequence_equals_chunks_stitched_in_any_arrival_order(video):
    """The writer's situation: chunk results arrive out of order from several actors."""
    eng = OracleEngine(video.annotations, video.frames)
    prompts = frame0_prompts(video)
    specs = _specs(prompts=prompts)
    stats = {}
    seq = ChunkSequence(specs, TrackingConfig(), "v", prompts, (64, 96), stats)
    want = list(seq.run(_frames_of(video), functools.partial(track_chunk, eng)))
    assert [fr.frame_index for fr in want] == list(range(30)) and stats["frames"] == 30
    assert want[3].pts_time == pytest.approx(0.1) and stats["stitch_relayed"] > 0
    # the same chunks tracked one by one (carry handed on), then stitched in reverse arrival order
    results, carry = [], None
    for c in specs:
        f, i, p = _frames_of(video)(c)
        r = track_step(functools.partial(track_chunk, eng), f, i, c, TrackingConfig(), carry, video_id="v",
                       original_size=(64, 96))
        carry = r.carry_out
        results.append((r, dict(zip(i.tolist(), p.tolist()))))
    vs = VideoStitch(TrackingConfig(), "v", len(specs), reserved_ids(prompts))
    got = []
    for r, pts in reversed(results):
        got += vs.add(r, pts)
    assert vs.complete
    assert [(fr.frame_index, fr.object_ids, [x["counts"] for x in fr.rles], fr.pts_time) for fr in got] == \
        [(fr.frame_index, fr.object_ids, [x["counts"] for x in fr.rles], fr.pts_time) for fr in want]
    with pytest.raises(ValueError, match="chunk 0 arrived twice"):
        vs.add(results[0][0])


AUTO = TrackingConfig.model_validate({"auto": {"enabled": True, "points_per_side": 16, "stability_thresh": 0.6}})


def test_an_auto_track_never_takes_a_user_id_first_prompted_later(video):
    """Issue 18 item 6 at the unit level: object 1 is prompted only in the last chunk; the tracks
    discovered in chunk 0 must get ids above 1 (chunk 0's result knows nothing of object 1)."""
    eng = OracleEngine(video.annotations, video.frames)
    objs = sorted(video.objects)
    prompts = [{"object_id": 1, "frame": 25, "box": video.box(25, objs[0])}]
    seq = ChunkSequence(_specs(prompts=prompts), AUTO, "v", prompts, (64, 96))
    out = list(seq.run(_frames_of(video), functools.partial(track_chunk, eng)))
    ids_early = {o for fr in out if fr.frame_index < 5 for o in fr.object_ids}
    assert ids_early and 1 not in ids_early, ids_early
    assert 1 in out[25].object_ids
    # without the reservation the first discovered track would have taken id 1
    bare = VideoStitch(AUTO, "v", 1)
    first = track_chunk(eng, video.frames[:12], range(12), [], AUTO, chunk_index=0, video_id="v", overlap_next=0)
    assert 1 in {o for fr in bare.add(first) for o in fr.object_ids}


def test_async_run_gives_the_same_frames(video):
    eng = OracleEngine(video.annotations, video.frames)
    prompts = frame0_prompts(video)

    async def track(*a, **k):
        return track_chunk(eng, *a, **k)

    async def collect():
        seq = ChunkSequence(_specs(prompts=prompts), TrackingConfig(), "v", prompts, (64, 96))
        return [fr async for fr in seq.arun(_frames_of(video), track)]

    got = asyncio.run(collect())
    seq = ChunkSequence(_specs(prompts=prompts), TrackingConfig(), "v", prompts, (64, 96))
    want = list(seq.run(_frames_of(video), functools.partial(track_chunk, eng)))
    assert [(f.frame_index, f.object_ids) for f in got] == [(f.frame_index, f.object_ids) for f in want]


def test_the_engine_protocol_is_what_segengine_and_the_oracle_provide(video):
    from hqseg_ray.config import ModelConfig
    from hqseg_ray.model.engine import SegEngine
    from hqseg_ray.track import Engine

    assert isinstance(OracleEngine(video.annotations, video.frames), Engine)
    assert isinstance(SegEngine.load(ModelConfig(type="toy", checkpoint="auto", device="cpu")), Engine)
    assert not isinstance(object(), Engine)
