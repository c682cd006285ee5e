"""Tracker mechanics on an oracle engine (answers prompts from ground truth) and a small random
SAM-HQ: seeds, forward/backward runs, corrections, occlusion, detector boxes, bad input."""

import pickle

import numpy as np
import pytest

from hqseg_ray.config import TrackingConfig
from hqseg_ray.masks import mask_iou, rle_decode, rle_encode
from hqseg_ray.track import ObjectState, track_chunk
from tests.track.helpers import OracleEngine, crossing_video, frame0_prompts, synthetic_video


@pytest.fixture(scope="module")
def video():
    return synthetic_video(8, frames=30, size=(96, 128), n_objects=(3, 3), pan=False)


def _masks(res, object_id):
    """{local frame: bool mask} of the track with ``object_id``."""
    tid = next(t for t, i in res.tracks.items() if i.object_id == object_id)
    return {t: rle_decode(e[tid].rle) for t, e in enumerate(res.entries) if tid in e and e[tid].rle is not None}


def test_frame0_boxes_propagate_with_one_encode_and_one_decode_call_per_frame(video):
    eng = OracleEngine(video.annotations, video.frames)
    calls = []
    real = eng.decode_low_res
    eng.decode_low_res = lambda emb, prompts, *a, **k: calls.append(len(prompts)) or real(emb, prompts, *a, **k)
    n = len(video.frames)
    res = track_chunk(eng, video.frames, range(n), frame0_prompts(video), TrackingConfig())
    assert eng.stats["encoded_frames"] == n
    assert len(calls) == n  # one decode call per frame, every object of the frame in it
    assert calls[0] == len(video.objects)
    for oid in video.objects:
        got = _masks(res, oid)
        ious = [mask_iou(got.get(t, np.zeros(video.annotations.shape[1:], bool)), video.mask(t, oid)) for t in range(n)]
        assert np.mean(ious) > 0.9, (oid, np.round(ious, 2))
    assert res.entries[0][1].source == "prompt" and res.entries[5][1].source == "track"


def test_prompt_on_a_later_frame_propagates_backward(video):
    eng = OracleEngine(video.annotations, video.frames)
    oid = 2
    res = track_chunk(eng, video.frames, range(30), [{"object_id": oid, "frame": 10, "box": video.box(10, oid)}])
    got = _masks(res, oid)
    for t in range(0, 30):
        if video.mask(t, oid).sum() > 50:
            assert t in got and mask_iou(got[t], video.mask(t, oid)) > 0.8, t
    tid = res.tracks and next(iter(res.tracks))
    assert [res.entries[t][tid].seed_distance for t in (0, 9, 10, 11)] == [10, 1, 0, 1]


def test_correction_covers_frames_nearer_to_it(video):
    eng = OracleEngine(video.annotations, video.frames)
    prompts = [{"object_id": 1, "frame": 0, "box": video.box(0, 1)},
               {"object_id": 1, "frame": 20, "box": video.box(20, 1)}]
    res = track_chunk(eng, video.frames, range(30), prompts)
    tid = next(iter(res.tracks))
    dist = [res.entries[t][tid].seed_distance for t in range(30)]
    assert dist[:11] == list(range(11))                 # forward from 0 up to the midpoint (tie forward)
    assert dist[11:21] == [20 - t for t in range(11, 21)]  # backward from the correction
    assert dist[21:] == list(range(1, 10))
    assert res.tracks[tid].seed_frames == [0, 20]


def test_occluded_object_emits_nothing_and_is_reacquired():
    frames, ann = crossing_video()
    eng = OracleEngine(ann, frames)
    box = [int(v) for v in (1, 25, 16, 39)]
    res = track_chunk(eng, frames, range(len(frames)), [{"object_id": 1, "frame": 0, "box": box},
                                                         {"object_id": 2, "frame": 0, "box": [34, 16, 62, 48]}])
    got = _masks(res, 1)
    hidden = [t for t in range(len(frames)) if not (ann[t] == 1).any()]
    assert not [t for t in hidden if t in got], "masks emitted while the object is fully hidden"
    back = hidden[-1] + 1
    assert any(t in got for t in range(back, back + 5)), "not re-acquired within 5 frames"
    assert mask_iou(got[len(frames) - 1], ann[-1] == 1) > 0.8


def _vanishing_video(frames: int = 16, size=(72, 128)):
    """Object 1, a red disc, sits still on the left, is gone on frames 6-9 (no occluder: it simply
    is not there) and is back on frame 10 on the far right, away from where it was and from any
    frame edge; object 2, a still green disc, stays in view. Returns (frames, annotations)."""
    h, w = size
    rng = np.random.default_rng(1)
    bg = rng.integers(60, 120, (h, w, 3)).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    out = np.repeat(bg[None], frames, 0)
    ann = np.zeros((frames, h, w), np.uint8)
    green = (xx - 60) ** 2 + (yy - 50) ** 2 <= 7 ** 2
    for t in range(frames):
        out[t][green], ann[t][green] = (40, 200, 60), 2
        if 6 <= t <= 9:
            continue
        cx = 20 if t < 6 else 104
        disc = (xx - cx) ** 2 + (yy - 24) ** 2 <= 7 ** 2
        out[t][disc], ann[t][disc] = (220, 40, 40), 1
    return out, ann


def test_an_object_back_away_from_where_it_was_is_found_by_its_colours():
    """Re-acquisition searches the places coloured like the object, not only its path and the frame
    edges (``reacquire_appearance_candidates``); with that search off it stays lost."""
    frames, ann = _vanishing_video()
    prompts = [{"object_id": 1, "frame": 0, "box": [13, 17, 28, 32]},
               {"object_id": 2, "frame": 0, "box": [53, 43, 68, 58]}]
    res = track_chunk(OracleEngine(ann, frames), frames, range(len(frames)), prompts)
    got = _masks(res, 1)
    assert not [t for t in range(6, 10) if t in got], "masks emitted while the object is gone"
    assert 10 in got and mask_iou(got[10], ann[10] == 1) > 0.8
    assert all(mask_iou(got[t], ann[t] == 1) > 0.8 for t in range(11, 16))
    assert 2 in {i.object_id for i in res.tracks.values()} and len(_masks(res, 2)) == 16  # the other one untouched
    off = TrackingConfig.model_validate({"tracker": {"reacquire_appearance_candidates": 0}})
    res_off = track_chunk(OracleEngine(ann, frames), frames, range(len(frames)), prompts, off)
    assert not [t for t in range(6, 16) if t in _masks(res_off, 1)]


def test_lost_after_max_lost_frames():
    frames, ann = crossing_video()
    eng = OracleEngine(ann, frames)
    cfg = TrackingConfig.model_validate({"tracker": {"max_lost_frames": 2}})
    res = track_chunk(eng, frames, range(len(frames)), [{"object_id": 1, "frame": 0, "box": [1, 25, 16, 39]}], cfg)
    got = _masks(res, 1)
    assert max(got) < 12 and 1 not in [i.object_id for i in res.tracks.values() if False]
    assert not res.carry_out["objects"]  # lost for good: nothing to relay


def test_detector_boxes_continue_tracks_or_start_new_ones(video):
    eng = OracleEngine(video.annotations, video.frames)
    prompts = [{"object_id": 1, "frame": 0, "box": video.box(0, 1)},
               {"frame": 5, "box": video.box(5, 1)},    # the tracked object: continues track 1
               {"frame": 5, "box": video.box(5, 3)}]    # untracked: a new track
    res = track_chunk(eng, video.frames, range(30), prompts)
    kinds = sorted((i.kind, i.object_id) for i in res.tracks.values())
    assert kinds == [("detector", None), ("prompt", 1)]
    t1 = next(t for t, i in res.tracks.items() if i.object_id == 1)
    assert res.tracks[t1].seed_frames == [0, 5] and res.entries[5][t1].source == "prompt"
    new = next(t for t, i in res.tracks.items() if i.kind == "detector")
    assert mask_iou(rle_decode(res.entries[0][new].rle), video.mask(0, 3)) > 0.8  # also propagated backward


def test_mask_prompt_becomes_box_and_logits(video):
    eng = OracleEngine(video.annotations, video.frames)
    res = track_chunk(eng, video.frames[:6], range(6), [{"object_id": 3, "frame": 0, "mask": rle_encode(video.mask(0, 3))}])
    assert mask_iou(_masks(res, 3)[5], video.mask(5, 3)) > 0.8


def test_carry_out_is_plain_data_and_roundtrips(video):
    eng = OracleEngine(video.annotations, video.frames)
    res = track_chunk(eng, video.frames[:8], range(8), frame0_prompts(video))
    carry = pickle.loads(pickle.dumps(res.carry_out))
    assert carry["frame_index"] == 7 and len(carry["objects"]) == len(video.objects)

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, (int, float, str, np.ndarray))

    assert plain(carry)
    st = ObjectState.from_dict(carry["objects"][0])
    again = st.to_dict(0)
    assert np.array_equal(again["logits"], carry["objects"][0]["logits"]) and again["mask"] == carry["objects"][0]["mask"]


# -- bad input -----------------------------------------------------------------------------------

def test_prompt_outside_the_chunk_is_a_clear_error(video):
    eng = OracleEngine(video.annotations, video.frames)
    with pytest.raises(ValueError, match=r"chunk 3: prompt frame\(s\) \[40\] are not frames of this chunk"):
        track_chunk(eng, video.frames[:8], range(8), [{"object_id": 1, "frame": 40, "box": [0, 0, 5, 5]}],
                    chunk_index=3, video_id="v")


@pytest.mark.parametrize("prompt, message", [
    ({"object_id": -1, "frame": 0, "box": [0, 0, 5, 5]}, "object_id must be a non-negative integer"),
    ({"object_id": "a", "frame": 0, "box": [0, 0, 5, 5]}, "object_id must be a non-negative integer"),
    ({"object_id": 1, "frame": 0, "box": [9, 0, 5, 5]}, "has x2 < x1"),
    ({"object_id": 1, "frame": 0, "mask": {"size": [3, 3], "counts": "x"}}, "mask size"),
    ({"frame": 0, "points": [[3, 3]], "labels": [1]}, "detector\\) needs a box"),
    ({"object_id": 1, "frame": 0}, "needs at least one of points, box or mask"),
])
def test_malformed_prompts_are_reported(video, prompt, message):
    eng = OracleEngine(video.annotations, video.frames)
    with pytest.raises(ValueError, match=message):
        track_chunk(eng, video.frames[:4], range(4), [prompt])


def test_no_prompts_and_no_auto_is_an_empty_result(video):
    eng = OracleEngine(video.annotations, video.frames)
    res = track_chunk(eng, video.frames[:4], range(4), [])
    assert res.tracks == {} and all(e == {} for e in res.entries) and res.carry_out["objects"] == []
    assert eng.stats["encoded_frames"] == 0  # nothing to do: not even encoded


def test_frames_and_indices_must_agree(video):
    eng = OracleEngine(video.annotations, video.frames)
    with pytest.raises(ValueError, match="3 frame indices for 4 frames"):
        track_chunk(eng, video.frames[:4], range(3), [])
    with pytest.raises(ValueError, match="strictly increasing"):
        track_chunk(eng, video.frames[:3], [0, 2, 1], [])


def test_random_weight_engine_runs_the_whole_path(video):
    """Mechanics on the real SegEngine (random small model: masks meaningless, calls real)."""
    from hqseg_ray.config import ModelConfig
    from hqseg_ray.model.engine import SegEngine
    from tests.model.helpers import small_sam

    eng = SegEngine(small_sam(), ModelConfig(type="vit_b", checkpoint=None, allow_random_init=True, device="cpu"))
    n = 6
    res = track_chunk(eng, video.frames[:n], range(n), frame0_prompts(video) + [{"frame": 3, "box": [5, 5, 40, 40]}],
                      TrackingConfig.model_validate({"tracker": {"min_score": 0.0, "min_area_ratio": 0.0,
                                                                 "max_area_growth": 1000}}))
    assert eng.stats["encoded_frames"] == n
    assert res.stats["decode_calls"] >= n
    assert len(res.carry_out["objects"]) >= 1


def test_auto_mode_discovers_and_tracks_without_prompts(video):
    eng = OracleEngine(video.annotations, video.frames)
    cfg = TrackingConfig.model_validate({"auto": {"enabled": True, "points_per_side": 16, "stability_thresh": 0.6}})
    res = track_chunk(eng, video.frames[:8], range(8), [], cfg)
    assert sorted(i.kind for i in res.tracks.values()) == ["auto"] * len(video.objects)
    assert {e.source for ent in res.entries for e in ent.values()} == {"auto"}
    found = [max(mask_iou(rle_decode(res.entries[7][tid].rle), video.mask(7, o)) for o in video.objects)
             for tid in res.tracks if res.entries[7][tid].rle is not None]
    assert len(found) == len(video.objects) and min(found) > 0.8


def test_carry_in_from_before_the_chunk_continues_the_track(video):
    """No overlap: the carried state is from the frame before the chunk (relay without overlap)."""
    eng = OracleEngine(video.annotations, video.frames)
    first = track_chunk(eng, video.frames[:10], range(10), frame0_prompts(video), chunk_index=0)
    second = track_chunk(eng, video.frames[10:20], range(10, 20), [], carry_in=first.carry_out, chunk_index=1)
    assert sorted(i.object_id for i in second.tracks.values()) == sorted(video.objects)
    assert all(i.carried_from == (0, i.track_id) for i in second.tracks.values())
    for tid, info in second.tracks.items():
        assert mask_iou(rle_decode(second.entries[0][tid].rle), video.mask(10, info.object_id)) > 0.8


def test_carry_in_from_another_model_is_refused(video):
    eng = OracleEngine(video.annotations, video.frames)
    first = track_chunk(eng, video.frames[:4], range(4), frame0_prompts(video))
    other = OracleEngine(video.annotations, video.frames, low_res=32)
    with pytest.raises(ValueError, match="carried-in logits have shape"):
        track_chunk(other, video.frames[3:8], range(3, 8), [], carry_in=first.carry_out, chunk_index=1)


def test_geometry_helpers():
    from hqseg_ray.track.motion import (LowResGeometry, Motion, clip_mask, color_hist, hist_similarity,
                                        interior_points, shift_mask)

    m = np.zeros((40, 60), bool)
    m[10:20, 5:25] = True
    assert np.array_equal(np.argwhere(shift_mask(m, 3, -2))[0], [8, 8])
    assert clip_mask(m, np.array([10, 0, 60, 40])).sum() == 10 * 15
    pts = interior_points(m, 2)
    assert len(pts) == 2 and all(m[int(y), int(x)] for x, y in pts)
    geo = LowResGeometry((40, 60), 64, (16, 16))
    lg = geo.mask_to_logits(m)
    assert lg.shape == (16, 16) and lg.max() > 0 and lg[15, 15] < 0
    moved = geo.shift_logits(lg, Motion(dx=12.0, dy=0.0))
    assert (moved > 0).sum() > 0 and np.argwhere(moved > 0)[:, 1].min() > np.argwhere(lg > 0)[:, 1].min()
    assert (geo.clip_logits(lg, np.array([0, 0, 10, 10])) > 0).sum() < (lg > 0).sum()
    frame = np.zeros((40, 60, 3), np.uint8)
    frame[m] = (200, 10, 10)
    other = np.zeros((40, 60, 3), np.uint8)
    other[m] = (10, 10, 200)
    h = color_hist(frame, m)
    assert hist_similarity(h, h) == pytest.approx(1.0)
    assert hist_similarity(h, color_hist(other, m)) < 0.5
    assert color_hist(frame, np.zeros_like(m)) is None
