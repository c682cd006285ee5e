"""Accuracy of the tracker with the shipped toy model (issue 5, item 7).

Data: the standard synthetic set (``hqseg synth`` defaults: seed 0, 4 clips x 48 frames, 320x240,
objects moving, rotating, scaling, occluding, leaving and re-entering, camera pan) and, for
occlusion, ten clips in which one object passes fully behind another
(``hqseg_ray.track.bench.occlusion_clip``). Each clip is encoded once per module and the
embeddings are reused by every variant (the tracker accepts precomputed embeddings).

The issue's bars are asserted as written. The shipped toy checkpoint (box mIoU 0.75 on single
frames, docs/models.md) misses some of them; those tests are marked ``xfail`` with the value
measured by the benchmark on the full set (docs/benchmarks.md, "Tracking"), so they still run and
report XPASS the day a better model meets the bar. Issue 5 stays open until they pass. CI runs a smaller
set (2 clips x 32 frames) than the benchmark (4 x 48) to keep the suite short; the occlusion bars run
on the benchmark's own 10 clips (a 90 % bar needs more than a handful of cases).
"""

import numpy as np
import pytest

from hqseg_ray.config import ModelConfig, TrackingConfig
from hqseg_ray.masks import mask_iou
from hqseg_ray.model.registry import SHIPPED_TOY_CHECKPOINT
from hqseg_ray.track.bench import (frame0_prompts, keyframe_prompts, occlusion_report, score, standard_set,
                                   toy_auto_config, track_video, true_box_predictions)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHIPPED_TOY_CHECKPOINT.exists(), reason="no toy checkpoint")]


@pytest.fixture(scope="module")
def toy():
    from hqseg_ray.model.engine import SegEngine

    return SegEngine.load(ModelConfig(type="toy", device="cpu"))


@pytest.fixture(scope="module")
def standard(toy):
    return [(v, toy.encode(v.frames)) for v in standard_set(videos=2, frames=32)]


def _run(toy, standard, prompts="frame0", **kw):
    out = []
    for v, emb in standard:
        p = frame0_prompts(v) if prompts == "frame0" else keyframe_prompts(v, 16)
        pred, _ = track_video(toy, v, p, embeddings=emb, **kw)
        out.append(score(pred, v))
    return out


def _mean(evals, key="JF"):
    return float(np.mean([e[key] for e in evals]))


@pytest.fixture(scope="module")
def frame0(toy, standard):
    return _run(toy, standard)


_UNMET = "issue 5 bar not met by the shipped toy model (6,000-step checkpoint, full 4 x 48 set); measured "


@pytest.mark.xfail(reason=_UNMET + "J&F 0.561 (naive 0.280, keyframes 0.676; the model's ceiling, the true box on "
                   "every frame, is 0.810)", strict=False)
def test_frame0_box_only_reaches_jf_080(frame0):
    jf = _mean(frame0)
    assert jf >= 0.80, f"J&F {jf:.3f} with a box on frame 0 only (per clip: {[round(e['JF'], 3) for e in frame0]})"


def test_true_box_ceiling_is_above_frame0_tracking(toy, standard, frame0):
    """The benchmark's ceiling row (the true box on every frame, no tracking) is what the model
    gives when the box the tracker estimates is exact; frame-0 tracking must stay below it, and
    the ceiling shows how far the 0.80 bar is from what the model can do at all."""
    ceiling = [score(true_box_predictions(toy, v, emb), v) for v, emb in standard]
    assert all(set(e) >= {"JF", "J", "F"} for e in ceiling)
    assert _mean(ceiling) >= _mean(frame0), f"ceiling {_mean(ceiling):.3f} vs frame-0 tracking {_mean(frame0):.3f}"


@pytest.fixture(scope="module")
def chunked(toy, standard):
    return _run(toy, standard, chunk=16, overlap=4)


def test_chunked_matches_unchunked(chunked, frame0):
    ratio = _mean(chunked) / max(_mean(frame0), 1e-9)
    assert ratio >= 0.98, f"chunked J&F {_mean(chunked):.3f} vs unchunked {_mean(frame0):.3f} (ratio {ratio:.3f})"


def test_chunking_adds_no_identity_switches(chunked, frame0):
    """Stitching must not add switches (the relay keeps ids exactly)."""
    assert sum(e["id_switches"] for e in chunked) <= sum(e["id_switches"] for e in frame0)


def test_chunked_has_no_identity_switches(chunked):
    switches = sum(e["id_switches"] for e in chunked)
    assert switches == 0, f"{switches} identity switches"


def test_keyframe_prompts_beat_frame0_only(toy, standard, frame0):
    key = _run(toy, standard, prompts="keyframes")
    assert _mean(key) > _mean(frame0), f"keyframes J&F {_mean(key):.3f} vs frame-0 only {_mean(frame0):.3f}"


def test_tracker_measured_beside_the_naive_baseline(toy, standard, frame0):
    """The issue asks for the naive baseline to be measured and reported beside the tracker (both in
    docs/benchmarks.md); with this toy model the two are close (0.223 vs 0.208 on the final checkpoint),
    so the tracker must not be worse by more than noise."""
    naive = _run(toy, standard, config=TrackingConfig.model_validate({"tracker": {"method": "naive"}}))
    assert 0.0 <= _mean(naive) <= 1.0
    assert _mean(frame0) >= _mean(naive) - 0.05, f"tracker J&F {_mean(frame0):.3f} vs naive {_mean(naive):.3f}"


@pytest.fixture(scope="module")
def occlusion(toy):
    return occlusion_report(toy, clips=10)


def test_occlusion_hides_the_mask(occlusion):
    """Bar: no mask on >= 90% of the frames where the object is fully hidden."""
    c = occlusion
    assert c["hidden"] > 0 and c["silent"] >= 0.9 * c["hidden"], f"no mask on {c['silent']}/{c['hidden']} hidden frames"


def test_occlusion_reacquires_within_5_frames(occlusion):
    """Bar: re-acquired (IoU >= 0.5) within 5 frames of reappearing (visible area back to a quarter
    of its median) in >= 90% of cases."""
    c = occlusion
    assert c["events"] > 0 and c["reacquired"] >= 0.9 * c["events"], f"re-acquired {c['reacquired']}/{c['events']}"


@pytest.mark.xfail(reason="issue 5 bar not met by the shipped toy model: 4 of the 5 fully visible objects of this "
                   "set found with the toy's discovery settings, one crop layer included (60 of 69 = 0.87 on the "
                   "seed 0-3 clips); the fifth, a ring, gets no mask of IoU >= 0.5 from any grid point or crop",
                   strict=False)
def test_auto_mode_finds_fully_visible_objects(toy, standard):
    """Chunk first frames (0 and 24: first frames of chunks 1 and 3 for chunk 16 / overlap 4,
    two per clip to keep the test short). An object counts as fully
    visible on a frame when it does not touch the border and its visible area is >= 90% of its
    largest visible area in the clip (the ground truth holds visible parts only)."""
    from hqseg_ray.track.auto import discover_objects

    # the toy's own discovery thresholds (configs/model-toy.yaml, chosen on seed-1 clips)
    auto = toy_auto_config()
    found = total = 0
    for v, emb in standard:
        areas = {o: np.array([(a == o).sum() for a in v.annotations]) for o in v.objects}
        for t in (0, 12):
            d = discover_objects(toy, emb.select([t]), 0, auto, image=v.frames[t])
            for o in v.objects:
                m = v.mask(t, o)
                if not m.any() or m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
                    continue
                if areas[o][t] < 0.9 * areas[o].max():
                    continue
                total += 1
                found += any(mask_iou(dm, m) >= 0.5 for dm in d.masks)
    assert total > 0 and found >= 0.9 * total, f"found {found} of {total} fully visible objects"


def test_three_masks_per_point_find_what_the_best_one_misses(toy):
    """``masks_per_point: 3`` keeps all of SAM's masks of each grid point: on this frame (seed-2
    set, clip 0, frame 12) the ring-like object 3 has no discovered mask with the best-rated one
    alone (IoU 0.04) and one of IoU 0.92 with all three; no object found with one is lost."""
    from hqseg_ray.track.auto import discover_objects

    v = standard_set(seed=2, videos=1, frames=48)[0]
    emb = toy.encode(v.frames[12:13])
    three = toy_auto_config()
    three = three.model_copy(update={"crop_n_layers": 0})  # the whole frame only: the grid's masks are compared
    best = {}
    for k, cfg in (("one", three.model_copy(update={"masks_per_point": 1})), ("three", three)):
        d = discover_objects(toy, emb, 0, cfg)
        best[k] = {o: max([mask_iou(m, v.mask(12, o)) for m in d.masks] or [0.0])
                   for o in v.objects if v.mask(12, o).any()}
    assert best["one"][3] < 0.5 <= best["three"][3], best
    assert {o for o, b in best["one"].items() if b >= 0.5} <= {o for o, b in best["three"].items() if b >= 0.5}, best


@pytest.fixture(scope="module")
def small_object_frame():
    """Seed-0 set, clip 1, frame 24: object 2 is a ring of 166 pixels that the whole-frame grid
    misses (best discovered IoU 0.02) and one crop layer finds (0.89)."""
    v = standard_set(seed=0, videos=2, frames=48)[1]
    return v.frames[24], v.mask(24, 2)


def _best_iou(masks, gt) -> float:
    return max([mask_iou(m, gt) for m in masks] or [0.0])


def test_crop_layers_find_a_small_object_the_whole_frame_misses(toy, small_object_frame):
    import cv2

    from hqseg_ray.track.auto import discover_objects

    frame, gt = small_object_frame
    auto = toy_auto_config()
    emb = toy.encode(frame[None])
    whole = discover_objects(toy, emb, 0, auto.model_copy(update={"crop_n_layers": 0}))
    crops = discover_objects(toy, emb, 0, auto.model_copy(update={"crop_n_layers": 1}), image=frame)
    assert _best_iou(whole.masks, gt) < 0.5 <= _best_iou(crops.masks, gt)
    assert crops.masks.shape[1:] == gt.shape and crops.logits.shape[1:] == toy.low_res_size
    assert len(crops) <= auto.max_objects and np.all(np.diff(crops.scores) <= 0)  # best first, capped
    # the frame as the tracker may hold it (resized, aspect kept): crops are cut from it, masks come
    # back at the original size in the right place
    half = cv2.resize(frame, (frame.shape[1] // 2, frame.shape[0] // 2), interpolation=cv2.INTER_AREA)
    from_half = discover_objects(toy, emb, 0, auto.model_copy(update={"crop_n_layers": 1}), image=half)
    assert from_half.masks.shape[1:] == gt.shape and _best_iou(from_half.masks, gt) >= 0.5


def test_crop_layers_need_the_frame_pixels(toy, small_object_frame):
    from hqseg_ray.config import AutoConfig
    from hqseg_ray.track.auto import discover_objects

    frame, _ = small_object_frame
    emb = toy.encode(frame[None])
    cfg = AutoConfig(crop_n_layers=1)
    with pytest.raises(ValueError, match="needs the frame's pixels"):
        discover_objects(toy, emb, 0, cfg)
    with pytest.raises(ValueError, match="aspect ratio"):
        discover_objects(toy, emb, 0, cfg, image=frame[:, :100])
    with pytest.raises(ValueError, match="uint8"):
        discover_objects(toy, emb, 0, cfg, image=frame.astype(np.float32))


def test_auto_mode_tracks_what_the_crop_layers_find(toy, small_object_frame):
    """``track_chunk`` hands the chunk's first frame to discovery: with a crop layer the small ring
    is discovered and becomes an automatic track."""
    from hqseg_ray.masks import rle_decode
    from hqseg_ray.track import track_chunk

    frame, gt = small_object_frame
    auto = toy_auto_config()
    cfg = TrackingConfig(auto=auto.model_copy(update={"enabled": True, "crop_n_layers": 1}))
    res = track_chunk(toy, frame[None], [24], [], cfg)
    masks = [rle_decode(e.rle) for e in res.entries[0].values() if e.rle is not None]
    assert {i.kind for i in res.tracks.values()} == {"auto"}
    assert _best_iou(masks, gt) >= 0.5


def test_a_mask_emptied_by_overlap_resolution_is_an_occluded_frame(toy):
    """Regression: on this clip a track's mask lost all its pixels to a neighbour after it had been
    accepted (overlap resolution / giving pixels back), and the tracker crashed on its empty box."""
    from hqseg_ray.synth.generate import Video

    v = standard_set(seed=2, videos=1, frames=48)[0]
    v = Video(v.frames[:24], v.annotations[:24], v.objects, v.video_id)
    pred, _ = track_video(toy, v, frame0_prompts(v))
    assert len(pred) == 24 and all(m.any() for d in pred.values() for m in d.values())


def test_automatic_mode_report_scores_unprompted_tracking(toy):
    """The benchmark's automatic-mode row: no prompts, ids assigned to the ground truth by J&F."""
    from hqseg_ray.track.bench import automatic_mode_report

    auto = toy_auto_config()
    clip = standard_set(seed=0, videos=4, frames=4)[3]
    r = automatic_mode_report(toy, [clip], auto.model_copy(update={"crop_n_layers": 0}))
    assert 1 <= r["tracks_per_clip"] <= auto.max_objects
    assert 0.35 < r["JF"] <= 1.0  # 0.51 measured: objects found and credited through the assignment
