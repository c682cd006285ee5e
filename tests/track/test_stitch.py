"""Identity across chunks: the Stitcher on hand-made chunk results, and relay / auto_match on an
oracle engine over a real synthetic video (ids kept to the end, chunked == unchunked)."""

import numpy as np
import pytest

from hqseg_ray.config import TrackingConfig
from hqseg_ray.masks import mask_iou, rle_decode, rle_encode
from hqseg_ray.track import ChunkResult, Stitcher, TrackEntry, TrackInfo, track_chunk
from tests.track.helpers import OracleEngine, frame0_prompts, synthetic_video


def _square(x, y, s=6, size=(32, 48)):
    m = np.zeros(size, bool)
    m[y:y + s, x:x + s] = True
    return rle_encode(m)


def _chunk(k, frames, tracks, overlap_next, entries):
    """entries: {track_id: {frame: (x, y, seed_distance) or None}}"""
    ent = [{} for _ in frames]
    for tid, per in entries.items():
        for f, v in per.items():
            t = frames.index(f)
            ent[t][tid] = TrackEntry(None if v is None else _square(v[0], v[1]), 0.9, "track",
                                     0 if v is None else v[2])
    return ChunkResult("v", k, list(frames), overlap_next, tracks, ent, {"objects": []})


def test_ids_are_matched_over_the_overlap_and_new_ones_start_above_user_ids():
    c0 = _chunk(0, range(0, 6), {1: TrackInfo(1, 5, "prompt"), 2: TrackInfo(2, None, "detector")}, 2,
                {1: {f: (f, 2, f) for f in range(6)}, 2: {f: (30, 20, f) for f in range(6)}})
    # chunk 1: track 7 is object 5 continued (no id, e.g. auto_match); track 8 is new; 9 continues the detector
    c1 = _chunk(1, range(4, 10), {7: TrackInfo(7, None, "detector"), 8: TrackInfo(8, None, "detector"),
                                  9: TrackInfo(9, None, "detector")}, 0,
                {7: {f: (f, 2, abs(f - 5)) for f in range(4, 10)}, 8: {f: (40, 0, 0) for f in range(4, 10)},
                 9: {f: (30, 20, 3) for f in range(4, 10)}})
    st = Stitcher(TrackingConfig(), "v", reserved_ids=[5, 9])
    out = st.push(c0)
    assert [fr.frame_index for fr in out] == [0, 1, 2, 3]  # frames 4, 5 wait for chunk 1
    assert out[0].object_ids == [5, 10]  # the detector track got an id above the user ids
    out += st.push(c1) + st.finish()
    assert [fr.frame_index for fr in out] == list(range(10))
    assert all(5 in fr.object_ids for fr in out)
    assert out[9].object_ids == [5, 10, 11]
    # overlap frames: nearer seed wins (frame 4: chunk 0 distance 4 vs chunk 1 distance 1 -> chunk 1)
    f4 = out[4]
    assert f4.chunk_indices[f4.object_ids.index(5)] == 1 and f4.sources[f4.object_ids.index(5)] == "stitch"
    assert f4.chunk_indices[f4.object_ids.index(10)] == 1  # seed distance 3 (chunk 1) < 4 (chunk 0)
    assert st.stats["matched"] == 2


def test_nearer_seed_decides_and_ties_keep_the_earlier_chunk():
    c0 = _chunk(0, range(0, 4), {1: TrackInfo(1, 1, "prompt")}, 2, {1: {0: (0, 0, 0), 1: (1, 0, 1), 2: (2, 0, 2),
                                                                       3: (3, 0, 3)}})
    c1 = _chunk(1, range(2, 6), {1: TrackInfo(1, 1, "prompt")}, 0,
                {1: {2: (20, 0, 2), 3: None, 4: (4, 0, 0), 5: (5, 0, 1)}})
    st = Stitcher()
    out = st.push(c0) + st.push(c1) + st.finish()
    assert out[2].chunk_indices == [0]                     # tie (2 vs 2): earlier chunk
    assert out[3].object_ids == []                         # chunk 1's seed is nearer and says hidden


def test_auto_helper_tracks_that_match_nothing_are_dropped_unless_auto_is_on():
    c0 = _chunk(0, range(0, 4), {1: TrackInfo(1, 3, "prompt")}, 2, {1: {f: (f, 0, f) for f in range(4)}})
    c1 = _chunk(1, range(2, 6), {1: TrackInfo(1, None, "auto"), 2: TrackInfo(2, None, "auto")}, 0,
                {1: {f: (f, 0, 0) for f in range(2, 6)}, 2: {f: (30, 20, 0) for f in range(2, 6)}})
    out = []
    st = Stitcher(TrackingConfig())
    out = st.push(c0) + st.push(c1) + st.finish()
    assert {o for fr in out for o in fr.object_ids} == {3}
    assert out[5].sources == ["track"]  # an auto track that adopted a user id is not "auto"
    st = Stitcher(TrackingConfig.model_validate({"auto": {"enabled": True}}))
    out = st.push(c0) + st.push(c1) + st.finish()
    assert {o for fr in out for o in fr.object_ids} == {3, 4}


def test_chunks_must_arrive_in_order():
    c0 = _chunk(0, range(0, 4), {}, 2, {})
    c2 = _chunk(2, range(2, 6), {}, 0, {})
    st = Stitcher(video_id="clip")
    st.push(c0)
    with pytest.raises(ValueError, match="video 'clip': chunks must be pushed in order: got chunk 2 after chunk 0"):
        st.push(c2)


# -- relay and auto_match on a real video (oracle engine) -------------------------------------------

@pytest.fixture(scope="module")
def video():
    return synthetic_video(8, frames=30, size=(96, 128), n_objects=(3, 3), pan=False)


def _run_chunked(eng, video, cfg, chunk=12, overlap=4):
    n = len(video.frames)
    starts = list(range(0, n - overlap, chunk - overlap))
    prompts = frame0_prompts(video)
    st = Stitcher(cfg, "v", reserved_ids=video.objects)
    out, carry = [], None
    for k, s in enumerate(starts):
        e = min(s + chunk, n)
        res = track_chunk(eng, video.frames[s:e], range(s, e), [p for p in prompts if s <= p["frame"] < e], cfg,
                          carry_in=carry if cfg.stitch.mechanism == "relay" else None, chunk_index=k,
                          video_id="v", overlap_next=(e - starts[k + 1]) if k + 1 < len(starts) else 0)
        carry = res.carry_out
        out += st.push(res)
        if e == n:
            break
    return out + st.finish()


@pytest.mark.parametrize("mechanism", ["relay", "auto_match"])
def test_frame0_objects_keep_their_ids_to_the_end(video, mechanism):
    eng = OracleEngine(video.annotations, video.frames)
    # the oracle's logits are area-resized masks, softer than a model's: lower stability bar
    cfg = TrackingConfig.model_validate({"stitch": {"mechanism": mechanism},
                                         "auto": {"points_per_side": 16, "stability_thresh": 0.6}})
    out = _run_chunked(eng, video, cfg)
    assert [fr.frame_index for fr in out] == list(range(30))
    for oid in video.objects:
        ious = []
        for fr in out:
            pred = rle_decode(fr.rles[fr.object_ids.index(oid)]) if oid in fr.object_ids else None
            ious.append(0.0 if pred is None else mask_iou(pred, video.mask(fr.frame_index, oid)))
        assert np.mean(ious) > 0.9, (mechanism, oid, np.round(ious, 2))
    assert {o for fr in out for o in fr.object_ids} == set(video.objects)  # no spurious objects
