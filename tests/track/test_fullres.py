"""The tracker at model resolution: work-grid masks, the judging step, and the full-resolution
masks written once per kept (frame, object) on a background pool."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from hqseg_ray.config import TrackerConfig
from hqseg_ray.masks import mask_iou, rle_decode
from hqseg_ray.model.engine import SegEngine
from hqseg_ray.track import ObjectState, track_chunk
from hqseg_ray.track.fullres import FullResWriter, frame_job, frame_masks
from hqseg_ray.track.motion import LowResGeometry
from hqseg_ray.track.preds import judge, predictions
from tests.track.helpers import OracleEngine, frame0_prompts, synthetic_video


def _postprocess(geo: LowResGeometry, logits: np.ndarray, size) -> np.ndarray:
    """The engine's own upsampling (torch) to ``size``."""
    fake = SimpleNamespace(image_size=geo.image_size)
    emb = SimpleNamespace(input_sizes=[geo.input_size], original_sizes=[tuple(size)])
    return np.asarray(SegEngine.postprocess(fake, emb, [0] * len(logits), torch.from_numpy(logits)))


def _logits(low: int, discs, seed=0) -> np.ndarray:
    """``[len(discs), low, low]`` logits, positive inside each (cx, cy, r) disc (low-res cells), noisy."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:low, 0:low].astype(np.float32)
    out = [(r - np.hypot(xx - cx, yy - cy)) * 2 + rng.normal(0, 0.5, (low, low)) for cx, cy, r in discs]
    return np.asarray(out, np.float32)


@pytest.mark.parametrize("original, image_size, low", [((1080, 1920), 1024, 256), ((240, 320), 256, 64),
                                                        ((333, 500), 256, 64)])
def test_work_masks_are_the_engines_masks_at_input_size(original, image_size, low):
    geo = LowResGeometry(original, image_size, (low, low), work_size=LowResGeometry(original, image_size,
                                                                                    (low, low)).input_size)
    assert geo.work_size == geo.input_size
    lg = _logits(low, [(low * 0.3, low * 0.2, low * 0.1), (low * 0.9, low * 0.5, low * 0.3), (2, 2, 3)])
    ref = _postprocess(geo, lg, geo.input_size)
    got = geo.work_masks(lg)  # windowed: only around the positive cells
    assert all(np.array_equal(a, b) for a, b in zip(got, ref))
    full = geo.full_masks(lg)
    ref_full = _postprocess(geo, lg, original)
    assert full.shape == ref_full.shape and np.mean(full != ref_full) < 1e-5  # OpenCV vs torch rounding at 0


def test_work_grid_is_capped_and_converts_boxes_and_areas():
    geo = LowResGeometry((1080, 1920), 256, (64, 64), work_size=(1080, 1920))
    assert geo.work_size == (576, 1024) and geo.px_area == pytest.approx(1080 * 1920 / (576 * 1024))
    box = np.array([100.0, 50.0, 900.0, 700.0])
    assert np.allclose(geo.box_from_work(geo.box_to_work(box)), box)
    m = np.zeros((1080, 1920), bool)
    m[100:300, 200:600] = True
    assert geo.to_work(m).shape == (576, 1024)


def _two_discs(geo: LowResGeometry, low: int):
    return _logits(low, [(20, 20, 10), (30, 22, 10)], seed=3)


def test_full_resolution_writer_shares_out_carves_and_matches_inline():
    low = 64
    geo = LowResGeometry((480, 640), 256, (low, low), work_size=(192, 256))
    lg = _two_discs(geo, low)
    job = frame_job([7, 9], [True, True], lg, [None, np.array([0.0, 0.0, 640.0, 480.0])], [], share=True)
    masks = frame_masks(geo, job)
    raw = geo.full_masks(lg)
    assert (raw[0] & raw[1]).any()                      # the discs overlap ...
    assert not (masks[0] & masks[1]).any()              # ... each pixel goes to one object
    assert np.array_equal(masks[0] | masks[1], raw[0] | raw[1])
    carved = frame_masks(geo, frame_job([7, 9], [True, True], lg, [None, None], [(0, 1)], share=False))
    assert not (carved[0] & carved[1]).any() and np.array_equal(carved[1], raw[1])  # 7 gave 9's pixels back
    inline, pooled = FullResWriter(geo, 0), FullResWriter(geo, 2)
    try:
        a = {k: v.result() for k, v in inline.submit(job).items()}
        b = {k: v.result() for k, v in pooled.submit(job).items()}
    finally:
        inline.close()
        pooled.close()
    assert a == b and set(a) == {7, 9} and rle_decode(a[7]).shape == (480, 640)


def test_judge_is_pure_and_index_aligned():
    """Two seeds on the same pixels: both kept (the user said so), nothing mutated."""
    low = 64
    geo = LowResGeometry((240, 320), 256, (low, low))
    lg = _two_discs(geo, low)
    prompts = [SimpleNamespace(box=np.array([0.0, 0.0, 320.0, 240.0])), SimpleNamespace(box=None)]
    jobs = [SimpleNamespace(mode="seed", candidates=None, prev=None, motion=None) for _ in prompts]
    pr = predictions(geo, [0, 1], prompts, [True, True], lg, np.array([0.9, 0.8]), True, 0.1)
    before = [m.copy() for m in pr.masks]
    frame = np.full((240, 320, 3), 128, np.uint8)
    v = judge(jobs, pr, frame, TrackerConfig(), geo)
    assert v.pick == [0, 1] and v.ok == [True, True] and len(v.areas) == len(v.boxes) == len(v.hists) == 2
    assert all(np.array_equal(a, b) for a, b in zip(before, pr.masks))
    assert v.shared and not (v.masks[0] & v.masks[1]).any()   # non_overlap: the pixels are shared out
    assert v.areas[0] == pytest.approx(np.count_nonzero(v.masks[0]) * geo.px_area, abs=1)


def test_tracking_resized_frames_writes_original_size_masks_and_carry():
    """Frames held at a smaller size (as the job hands them over): decisions on that grid, masks
    written at the original size, carry_out at the original size, and it carries into a next chunk."""
    video = synthetic_video(8, frames=12, size=(96, 128), n_objects=(3, 3), pan=False)
    small = np.stack([cv2.resize(f, (64, 48), interpolation=cv2.INTER_AREA) for f in video.frames])
    eng = OracleEngine(video.annotations, small)
    res = track_chunk(eng, small[:8], range(8), frame0_prompts(video), original_size=(96, 128))
    for oid in video.objects:
        tid = next(t for t, i in res.tracks.items() if i.object_id == oid)
        ious = [mask_iou(rle_decode(res.entries[t][tid].rle), video.mask(t, oid)) for t in range(8)
                if res.entries[t][tid].rle is not None]
        assert len(ious) >= 6 and np.mean(ious) > 0.85, (oid, np.round(ious, 2))
        assert all(rle_decode(e[tid].rle).shape == (96, 128) for e in res.entries if e[tid].rle is not None)
    st = ObjectState.from_dict(res.carry_out["objects"][0])
    assert st.mask.shape == (96, 128) and st.mask.any()
    nxt = track_chunk(eng, small[7:12], range(7, 12), [], carry_in=res.carry_out, chunk_index=1,
                      original_size=(96, 128))
    assert len(nxt.tracks) == len(video.objects)
    assert sum(e.rle is not None for ent in nxt.entries for e in ent.values()) >= 3 * 4


def test_later_batches_are_encoded_on_a_background_thread_with_the_same_result(monkeypatch):
    import threading

    from hqseg_ray.track import tracker

    video = synthetic_video(8, frames=10, size=(96, 128), n_objects=(3, 3), pan=False)
    eng = OracleEngine(video.annotations, video.frames)  # encode_batch 4: batches at frames 0, 4, 8
    threads = []
    real = eng.encode
    eng.encode = lambda frames, sizes=None: threads.append(threading.current_thread().name) or real(frames, sizes)
    ahead = track_chunk(eng, video.frames, range(10), frame0_prompts(video))
    assert threads[0] == threading.current_thread().name and len(threads) == 3
    assert all(name.startswith("hqseg-encode") for name in threads[1:])
    monkeypatch.setattr(tracker, "ENCODE_AHEAD", False)
    monkeypatch.setattr(tracker, "RLE_THREADS", 0)
    inline = track_chunk(eng, video.frames, range(10), frame0_prompts(video))
    assert [{k: (e.rle, e.source) for k, e in ent.items()} for ent in ahead.entries] == \
        [{k: (e.rle, e.source) for k, e in ent.items()} for ent in inline.entries]


def test_the_test_and_bench_engines_are_tracker_engines():
    from hqseg_ray.bench.feed import InstantEngine
    from hqseg_ray.track.types import Engine

    video = synthetic_video(8, frames=2, size=(96, 128), n_objects=(1, 1), pan=False)
    assert isinstance(OracleEngine(video.annotations, video.frames), Engine)
    assert isinstance(InstantEngine(256, 64, (96, 128), lambda t: np.zeros((1, 5)), "toy"), Engine)
    assert not isinstance(object(), Engine)
