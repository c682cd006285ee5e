"""Training batches: the box + mask prompts refine the box prompt's own object, and the model's own
logits fed back in training are moved like one frame of motion (what the tracker feeds the model)."""

import numpy as np

from hqseg_ray.train.data import KINDS, make_batch, warp_logits


def test_box_mask_prompts_use_the_box_prompts_objects():
    for seed in range(5):
        b = make_batch(np.random.default_rng(seed), 4, 128, 32)
        assert set(b.prompts) == set(KINDS)
        np.testing.assert_array_equal(b.prompts["box"]["gt"], b.prompts["box_mask"]["gt"])
        np.testing.assert_array_equal(b.prompts["box"]["frame"], b.prompts["box_mask"]["frame"])


def test_warp_logits_moves_the_mask_but_keeps_its_size_and_scale():
    lg = np.full((3, 32, 32), -8.0, np.float32)
    lg[:, 10:20, 12:22] = 8.0
    out = warp_logits(np.random.default_rng(0), lg)
    assert out.shape == lg.shape and out.dtype == np.float32
    for a, b in zip(lg, out):
        area_a, area_b = (a > 0).sum(), (b > 0).sum()
        assert 0.6 * area_a <= area_b <= 1.6 * area_a
        assert b.min() >= -8.0 - 1e-5 and b.max() <= 8.0 + 1e-5
    assert any(((a > 0) != (b > 0)).any() for a, b in zip(lg, out)), "nothing moved"
    # an empty mask stays empty (nothing to move)
    empty = np.full((1, 16, 16), -5.0, np.float32)
    assert (warp_logits(np.random.default_rng(1), empty) <= 0).all()
