"""J, F and identity switches against hand-made cases with known answers."""

import math

import numpy as np
import pytest

from hqseg_ray.eval import evaluate_video, f_score, j_score
from hqseg_ray.eval.metrics import bound_pixels, seg2bmap


def square(h=100, w=100, x=30, y=30, side=20):
    m = np.zeros((h, w), bool)
    m[y:y + side, x:x + side] = True
    return m


def brute_force_f(pred, gt, r):
    """Independent F: a boundary pixel matches if the other boundary has a pixel within distance r."""
    a, b = np.argwhere(seg2bmap(pred)), np.argwhere(seg2bmap(gt))
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    p = (d.min(1) <= r).mean()
    rec = (d.min(0) <= r).mean()
    return 0.0 if p + rec == 0 else 2 * p * rec / (p + rec)


def test_identical_masks_score_one():
    m = square()
    assert j_score(m, m) == 1.0
    assert f_score(m, m) == 1.0


def test_disjoint_masks_score_zero():
    a, b = square(x=5, y=5), square(x=70, y=70)
    assert j_score(a, b) == 0.0
    assert f_score(a, b) == 0.0


def test_empty_cases_follow_davis():
    z = np.zeros((50, 50), bool)
    assert j_score(z, z) == 1.0 and f_score(z, z) == 1.0
    assert j_score(z, square(50, 50, 10, 10, 10)) == 0.0
    assert f_score(z, square(50, 50, 10, 10, 10)) == 0.0


def test_bound_is_ceil_of_0008_diagonal():
    assert bound_pixels((100, 100)) == math.ceil(0.008 * math.hypot(100, 100)) == 2
    assert bound_pixels((480, 854)) == 8
    assert bound_pixels((10, 10), bound_th=3) == 3


def test_one_pixel_shift():
    gt = square()
    pred = np.roll(gt, 1, axis=1)
    # 20 x 20 square moved by one column: overlap 20 x 19, union 20 x 21
    assert j_score(pred, gt) == pytest.approx(380 / 420)
    # within the 2-pixel tolerance every boundary pixel matches
    assert f_score(pred, gt) == 1.0


@pytest.mark.parametrize("shift", [3, 5, 10])
def test_large_shift_matches_independent_computation(shift):
    gt = square()
    pred = np.roll(gt, shift, axis=1)
    f = f_score(pred, gt)
    assert 0.0 < f < 1.0
    assert f == pytest.approx(brute_force_f(pred, gt, 2), abs=1e-9)


def test_evaluate_video_means_and_id_switches():
    a, b = square(x=10, y=10), square(x=60, y=60)
    gt = {t: (a.astype(np.uint8) + 2 * b.astype(np.uint8)) for t in range(4)}
    # object 1 predicted under id 1 on frames 0-1, then under id 3 on frames 2-3: one switch
    pred = {0: {1: a, 2: b}, 1: {1: a, 2: b}, 2: {3: a, 2: b}, 3: {3: a, 2: b}}
    r = evaluate_video(pred, gt)
    assert r["per_object"][2]["J"] == 1.0 and r["per_object"][2]["id_switches"] == 0
    assert r["per_object"][1]["J"] == 0.5  # frames 2-3 have no mask under id 1
    assert r["per_object"][1]["id_switches"] == 1
    assert r["id_switches"] == 1
    assert r["J"] == pytest.approx(0.75) and r["JF"] == pytest.approx((r["J"] + r["F"]) / 2)
    assert evaluate_video(pred, gt, exclude_first_last=True)["frames"] == 2


def test_size_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="annotation size"):
        evaluate_video({0: {1: np.ones((10, 10), bool)}}, {0: square()})


def test_match_objects_assigns_predictions_one_to_one_by_jf():
    """Automatic-mode output: predicted ids say nothing about ground-truth ids."""
    from hqseg_ray.eval.metrics import match_objects, relabel

    a, b = square(x=10, y=10), square(x=60, y=60)
    half_a = a.copy()
    half_a[:, 20:] = False
    gt = {t: (a.astype(np.uint8) + 2 * b.astype(np.uint8)) for t in range(3)}
    # 7 is object 2 exactly; 9 is object 1 but missing on frame 2 (J&F 2/3); 11 is half of object 1
    # on every frame (J 0.5: less than 9's); 13 never touches an object; 15 covers both objects
    # (J 0.5 against each: the assignment is one-to-one, so neither object gets it)
    pred = {t: {7: b, 11: half_a, 13: square(x=80, y=5, side=8), 15: a | b} for t in range(3)}
    pred[0][9] = pred[1][9] = a
    mapping = match_objects(pred, gt)
    assert mapping == {7: 2, 9: 1}
    r = evaluate_video(relabel(pred, mapping), gt)
    assert r["per_object"][2]["J"] == 1.0
    assert r["per_object"][1]["J"] == pytest.approx(2 / 3)
    assert evaluate_video(pred, gt)["J"] == 0.0  # the same output scored by its own ids
    assert match_objects({}, gt) == {} and match_objects(pred, {0: np.zeros((100, 100), np.uint8)}) == {}
