"""The mask decoder's fast path (SDPA attention, fused LayerNorm2d, channels-last weights) and the
single-frame views equal the reference computation."""

import numpy as np
import pytest
import torch

from hqseg_ray.config import ModelConfig
from hqseg_ray.model.attention import disable_decoder_fast_path, enable_decoder_fast_path
from hqseg_ray.model.engine import SegEngine
from hqseg_ray.prompts import Prompt
from tests.model.helpers import small_sam


@pytest.fixture(scope="module")
def engine():
    return SegEngine(small_sam(3), ModelConfig(type="vit_b", checkpoint=None, allow_random_init=True, device="cpu"))


def _prompts(engine, frames):
    rng = np.random.default_rng(0)
    out = []
    for i, f in enumerate(frames):
        x, y = rng.uniform(5, 40, 2)
        out.append(Prompt(frame=f, box=[x, y, x + 30, y + 20], points=[[x + 10, y + 10]], labels=[1],
                          mask_input=rng.normal(0, 3, engine.low_res_size).astype(np.float32)))
    return out


@pytest.mark.parametrize("frames", [[1, 1, 1, 1, 1], [0, 1, 1, 0, 1]], ids=["one frame", "two frames"])
def test_fast_decoder_equals_reference(engine, frames):
    emb = engine.encode(np.random.default_rng(1).integers(0, 256, (2, 70, 90, 3), dtype=np.uint8))
    prompts = _prompts(engine, frames)
    assert engine.single_frame_views
    fast, fast_scores = engine.decode_low_res(emb, prompts)
    disable_decoder_fast_path(engine.sam.mask_decoder)
    engine.single_frame_views = False
    try:
        ref, ref_scores = engine.decode_low_res(emb, prompts)
    finally:
        engine.single_frame_views = True
        assert enable_decoder_fast_path(engine.sam.mask_decoder) > 0
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast_scores, ref_scores, atol=1e-5, rtol=1e-5)
    assert ((fast > 0) == (ref > 0)).float().mean() > 0.9999


def test_sdpa_off_leaves_the_decoder_as_published():
    eng = SegEngine(small_sam(3), ModelConfig(type="vit_b", checkpoint=None, allow_random_init=True, device="cpu",
                                              sdpa=False))
    assert not any("forward" in m.__dict__ for m in eng.sam.mask_decoder.modules())
