"""Accuracy of the tracker with the shipped toy model (issue 5, item 7).

Data: the standard synthetic set (``hqseg synth`` defaults: seed 0, 4 clips x 48 frames, 320x240,
objects moving, rotating, scaling, occluding, leaving and re-entering, camera pan) and, for
occlusion, ten clips in which one object passes fully behind another
(``hqseg_ray.track.bench.occlusion_clip``). Each clip is encoded once per module and the
embeddings are reused by every variant (the tracker accepts precomputed embeddings).

The issue's bars are asserted as written. Where the current toy checkpoint misses one, the test
fails and the measured value is in its message (and in docs/benchmarks.md).
"""

import numpy as np
import pytest

from hqseg_ray.config import AutoConfig, ModelConfig, TrackingConfig
from hqseg_ray.masks import mask_iou
from hqseg_ray.model.registry import SHIPPED_TOY_CHECKPOINT
from hqseg_ray.track.bench import (frame0_prompts, keyframe_prompts, occlusion_report, score, standard_set,
                                   track_video)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SHIPPED_TOY_CHECKPOINT.exists(), reason="no toy checkpoint")]


@pytest.fixture(scope="module")
def toy():
    from hqseg_ray.model.engine import SegEngine

    return SegEngine.load(ModelConfig(type="toy", device="cpu"))


@pytest.fixture(scope="module")
def standard(toy):
    return [(v, toy.encode(v.frames)) for v in standard_set()]


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


def test_frame0_box_only_reaches_jf_080(frame0):
    jf = _mean(frame0)
    assert jf >= 0.80, f"J&F {jf:.3f} with a box on frame 0 only (per clip: {[round(e['JF'], 3) for e in frame0]})"


def test_chunked_matches_unchunked_without_id_switches(toy, standard, frame0):
    chunked = _run(toy, standard, chunk=16, overlap=4)
    ratio = _mean(chunked) / max(_mean(frame0), 1e-9)
    switches = sum(e["id_switches"] for e in chunked)
    assert ratio >= 0.98 and switches == 0, (f"chunked J&F {_mean(chunked):.3f} vs unchunked {_mean(frame0):.3f} "
                                             f"(ratio {ratio:.3f}), {switches} identity switches")


def test_keyframe_prompts_beat_frame0_only(toy, standard, frame0):
    key = _run(toy, standard, prompts="keyframes")
    assert _mean(key) > _mean(frame0), f"keyframes J&F {_mean(key):.3f} vs frame-0 only {_mean(frame0):.3f}"


def test_tracker_beats_the_naive_baseline(toy, standard, frame0):
    naive = _run(toy, standard, config=TrackingConfig.model_validate({"tracker": {"method": "naive"}}))
    assert _mean(frame0) > _mean(naive), f"tracker J&F {_mean(frame0):.3f} vs naive {_mean(naive):.3f}"


def test_occlusion_hides_the_mask_and_reacquires(toy):
    """Bars: no mask on >= 90% of fully hidden frames; re-acquired (IoU >= 0.5) within 5 frames of
    reappearing (visible area back to a quarter of its median) in >= 90% of cases."""
    c = occlusion_report(toy, clips=10)
    assert c["silent"] >= 0.9 * c["hidden"] and c["reacquired"] >= 0.9 * c["events"], (
        f"no mask on {c['silent']}/{c['hidden']} hidden frames; re-acquired {c['reacquired']}/{c['events']}")


def test_auto_mode_finds_fully_visible_objects(toy, standard):
    """Chunk first frames (0 and 24: first frames of chunks 1 and 3 for chunk 16 / overlap 4,
    two per clip to keep the test short). An object counts as fully
    visible on a frame when it does not touch the border and its visible area is >= 90% of its
    largest visible area in the clip (the ground truth holds visible parts only)."""
    from hqseg_ray.track.auto import discover_objects

    found = total = 0
    for v, emb in standard:
        areas = {o: np.array([(a == o).sum() for a in v.annotations]) for o in v.objects}
        for t in (0, 24):
            d = discover_objects(toy, emb.select([t]), 0, AutoConfig())
            for o in v.objects:
                m = v.mask(t, o)
                if not m.any() or m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
                    continue
                if areas[o][t] < 0.9 * areas[o].max():
                    continue
                total += 1
                found += any(mask_iou(dm, m) >= 0.5 for dm in d.masks)
    assert total > 0 and found >= 0.9 * total, f"found {found} of {total} fully visible objects"
