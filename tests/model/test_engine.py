"""SegEngine against segment_anything_hq.SamPredictor, batching, and bad input."""

import copy

import numpy as np
import pytest
import torch
from segment_anything_hq import SamPredictor

from hqseg_ray.config import ModelConfig
from hqseg_ray.model.engine import SegEngine
from hqseg_ray.model.registry import build_model
from hqseg_ray.prompts import Prompt
from tests.model.helpers import small_sam

RANDOM = dict(type="vit_b", checkpoint=None, allow_random_init=True, device="cpu")


def _engine(sam, **kw):
    return SegEngine(copy.deepcopy(sam), ModelConfig(**{**RANDOM, **kw}))


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def _reference(pred, p: Prompt, multimask, hq):
    kw = {}
    if p.points is not None:
        kw.update(point_coords=p.points, point_labels=p.labels)
    if p.box is not None:
        kw.update(box=p.box)
    if p.mask_input is not None:
        kw.update(mask_input=p.mask_input[None])
    m, s, lr = pred.predict(multimask_output=multimask, hq_token_only=hq, **kw)
    return m[0], s[0], lr[0]


def _prompts(h, w, low_res, rng):
    mask_logits = rng.normal(0, 4, size=low_res).astype(np.float32)
    return [
        Prompt(points=[[w * 0.3, h * 0.4]], labels=[1]),
        Prompt(points=[[w * 0.3, h * 0.4], [w * 0.7, h * 0.6], [w * 0.5, h * 0.1]], labels=[1, 1, 0]),
        Prompt(box=[w * 0.1, h * 0.2, w * 0.6, h * 0.9]),
        Prompt(points=[[w * 0.3, h * 0.5]], labels=[1], box=[w * 0.1, h * 0.2, w * 0.6, h * 0.9]),
        Prompt(box=[w * 0.1, h * 0.2, w * 0.6, h * 0.9], mask_input=mask_logits),
    ]


def _check_equivalence(sam, sizes, sdpa, rng):
    eng = _engine(sam, sdpa=sdpa)
    pred = SamPredictor(copy.deepcopy(sam))
    for (h, w) in sizes:
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        emb = eng.encode(img[None])
        pred.set_image(img)
        prompts = _prompts(h, w, eng.low_res_size, rng)
        for multimask in (False, True):
            for hq in (False, True):
                masks, scores, lowres = eng.decode(emb, prompts, multimask=multimask, hq_token_only=hq)
                assert masks.shape == (len(prompts), h, w) and masks.dtype == bool
                for i, p in enumerate(prompts):
                    rm, rs, rl = _reference(pred, p, multimask, hq)
                    assert _iou(masks[i], rm) >= 0.999, (h, w, i, multimask, hq)
                    assert abs(scores[i] - rs) < 1e-4
                    assert np.abs(lowres[i] - rl).max() < 1e-3


@pytest.mark.parametrize("sdpa", [False, True])
def test_small_vit_matches_sampredictor(sdpa, rng):
    _check_equivalence(small_sam(), [(120, 200), (256, 256), (300, 97), (37, 41)], sdpa, rng)


@pytest.mark.slow
def test_vit_tiny_matches_sampredictor(rng):
    torch.manual_seed(1)
    sam = build_model("vit_tiny")
    _check_equivalence(sam, [(180, 320)], False, rng)


def test_batched_decode_equals_single(rng):
    eng = _engine(small_sam(), decode_batch=4)
    frames = rng.integers(0, 256, size=(3, 90, 160, 3), dtype=np.uint8)
    emb = eng.encode(frames)
    prompts = []
    for k in range(9):
        f = k % 3
        prompts.append(Prompt(frame=f, box=[5 + k * 3, 10, 60 + k * 5, 80], points=[[30 + k, 40]], labels=[1]))
    masks, scores, lowres = eng.decode(emb, prompts)
    calls_batched = eng.stats["decode_calls"]
    assert calls_batched == 3  # 9 prompts, decode_batch 4 -> 3 calls
    for i, p in enumerate(prompts):
        m1, s1, l1 = eng.decode(emb, [p])
        assert np.array_equal(m1[0], masks[i]) or _iou(m1[0], masks[i]) >= 0.999
        assert abs(s1[0] - scores[i]) < 1e-5
        assert np.abs(l1[0] - lowres[i]).max() < 1e-4
    # frame pairing: the same prompt on another frame gives that frame's result
    m_a, _, _ = eng.decode(emb, [Prompt(frame=0, box=[10, 10, 80, 80])])
    m_b, _, _ = eng.decode(emb, [Prompt(frame=2, box=[10, 10, 80, 80])])
    assert not np.array_equal(m_a, m_b)


def test_mixed_structures_keep_prompt_order(rng):
    eng = _engine(small_sam())
    emb = eng.encode(rng.integers(0, 256, size=(2, 64, 64, 3), dtype=np.uint8))
    ps = [Prompt(frame=1, box=[1, 1, 30, 30]), Prompt(frame=0, points=[[5, 5]], labels=[1]),
          Prompt(frame=1, points=[[5, 5], [20, 20]], labels=[1, 0])]
    masks, scores, _ = eng.decode(emb, ps)
    for i, p in enumerate(ps):
        m, s, _ = eng.decode(emb, [p])
        assert abs(s[0] - scores[i]) < 1e-5


def test_all_three_masks_of_each_prompt_for_discovery(rng):
    """``multimask="all"``: SAM's three masks per prompt (what automatic discovery keeps); the
    best-of-three selection is the one with the highest score among them."""
    eng = _engine(small_sam(), decode_batch=4)
    emb = eng.encode(rng.integers(0, 256, size=(2, 64, 96, 3), dtype=np.uint8))
    ps = [Prompt(frame=k % 2, points=[[10 + 7 * k, 20 + 3 * k]], labels=[1]) for k in range(6)]
    lg, sc = eng.decode_low_res(emb, ps, multimask="all")
    assert lg.shape == (6, 3, *eng.low_res_size) and sc.shape == (6, 3)
    best, best_sc = eng.decode_low_res(emb, ps, multimask=True)
    k = sc.argmax(1)
    assert torch.allclose(sc[torch.arange(6), k], best_sc, atol=1e-5)
    assert torch.allclose(lg[torch.arange(6), k], best, atol=1e-4)
    assert not torch.allclose(lg[:, 0], lg[:, 1])                 # three different masks
    e_lg, e_sc = eng.decode_low_res(emb, [], multimask="all")
    assert e_lg.shape == (0, 3, *eng.low_res_size) and e_sc.shape == (0, 3)


def test_batched_encode_equals_single(rng):
    eng = _engine(small_sam(), encode_batch=3)
    frames = rng.integers(0, 256, size=(3, 100, 140, 3), dtype=np.uint8)
    together = eng.encode(frames)
    assert eng.stats["encode_calls"] == 1
    for i in range(3):
        single = eng.encode(frames[i:i + 1])
        assert torch.allclose(single.image_embeddings[0], together.image_embeddings[i], atol=1e-4)
        assert torch.allclose(single.hq_features[0], together.hq_features[i], atol=1e-4)


def test_preresized_frames_with_original_sizes(rng):
    """Frames resized by the caller (as the pipeline does) keep prompts in original pixels."""
    eng = _engine(small_sam())
    big = rng.integers(0, 256, size=(512, 384, 3), dtype=np.uint8)
    from hqseg_ray.model.engine import resize_longest_side

    small = resize_longest_side(big, eng.image_size)
    e1 = eng.encode(big[None])
    e2 = eng.encode(small[None], original_sizes=[(512, 384)])
    p = [Prompt(box=[50, 60, 300, 400])]
    m1, s1, _ = eng.decode(e1, p)
    m2, s2, _ = eng.decode(e2, p)
    assert m2.shape == (1, 512, 384)
    assert np.array_equal(m1, m2) and abs(s1[0] - s2[0]) < 1e-6


def test_input_size_read_from_model():
    eng = _engine(small_sam())
    assert eng.image_size == 256 and eng.low_res_size == (64, 64)


def test_sdpa_attention_equals_original(rng):
    from hqseg_ray.model.attention import disable_sdpa, enable_sdpa

    sam = small_sam()
    x = torch.from_numpy(rng.normal(size=(2, 3, 256, 256)).astype(np.float32))
    with torch.no_grad():
        ref, ref_i = sam.image_encoder(x)
        assert enable_sdpa(sam.image_encoder) == 2
        out, out_i = sam.image_encoder(x)
        disable_sdpa(sam.image_encoder)
        back, _ = sam.image_encoder(x)
    assert torch.allclose(ref, out, atol=1e-4, rtol=1e-4)
    assert torch.allclose(ref_i[0], out_i[0], atol=1e-4, rtol=1e-4)
    assert torch.equal(ref, back)


# ------------------------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def eng_emb():
    eng = _engine(small_sam())
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 60, 80, 3), dtype=np.uint8)
    return eng, eng.encode(frames)


@pytest.mark.parametrize("frames, message", [
    (np.zeros((1, 10, 10, 3), dtype=np.float32), "dtype must be uint8"),
    (np.zeros((10, 10, 3), dtype=np.uint8), "wrap it: frames[None]"),
    (np.zeros((1, 10, 10, 4), dtype=np.uint8), "must be [H, W, 3]"),
    (np.zeros((1, 10, 10), dtype=np.uint8), "rank 3"),
    (np.zeros((0, 10, 10, 3), dtype=np.uint8), "empty"),
    ([], "empty"),
])
def test_bad_frames(eng_emb, frames, message):
    eng, _ = eng_emb
    with pytest.raises(ValueError, match=None) as exc:
        eng.encode(frames)
    assert message in str(exc.value)


@pytest.mark.parametrize("prompt, message", [
    (Prompt(frame=5, box=[1, 1, 5, 5]), "frame 5 was not encoded"),
    (Prompt(points=[[100, 5]], labels=[1]), "outside the 80x60 frame"),
    (Prompt(points=[[10, 5]], labels=[2]), "labels must be 0 or 1"),
    (Prompt(points=[[10, 5], [3, 3]], labels=[1]), "2 points but 1 labels"),
    (Prompt(box=[50, 20, 10, 40]), "has x2 < x1"),
    (Prompt(box=[5, 40, 10, 20]), "has y2 < y1"),
    (Prompt(box=[5, 5, 10, 10], mask_input=np.zeros((32, 32))), "the model needs [64, 64]"),
    (Prompt(frame=0), "needs at least one of"),
    (Prompt(points=[[1, 2]]), "without labels"),
])
def test_bad_prompts_name_index_and_frame(eng_emb, prompt, message):
    eng, emb = eng_emb
    good = Prompt(box=[1, 1, 20, 20])
    with pytest.raises(ValueError) as exc:
        eng.decode(emb, [good, prompt])
    text = str(exc.value)
    assert message in text
    assert f"prompt 1 (frame {prompt.frame})" in text


def test_all_problems_reported_at_once(eng_emb):
    eng, emb = eng_emb
    with pytest.raises(ValueError) as exc:
        eng.decode(emb, [Prompt(box=[50, 20, 10, 40]), Prompt(points=[[1, 2]], labels=[3])])
    text = str(exc.value)
    assert "2 problems" in text and "prompt 0" in text and "prompt 1" in text


def test_empty_prompt_list(eng_emb):
    eng, emb = eng_emb
    masks, scores, lowres = eng.decode(emb, [])
    assert len(masks) == 0 and scores.shape == (0,) and lowres.shape == (0, 64, 64)


def test_explicit_cuda_without_cuda_is_clear():
    if torch.cuda.is_available():
        pytest.skip("CUDA available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        SegEngine(small_sam(), ModelConfig(**{**RANDOM, "device": "cuda"}))
