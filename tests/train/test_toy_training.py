"""`hqseg train-toy` at a few steps: the checkpoint loads strictly and the same seed reproduces it."""

import pytest
import torch

from hqseg_ray.config import ModelConfig
from hqseg_ray.model.engine import SegEngine
from hqseg_ray.train.toy import train


def test_two_steps_same_seed_same_weights(tmp_path):
    kw = dict(seed=3, steps=2, spec_name="p16e160", batch_images=2, threads=1, eval_every=10_000,
              eval_images=2, bf16=False)
    ra = train(str(tmp_path / "a.pt"), **kw)
    rb = train(str(tmp_path / "b.pt"), **kw)
    assert ra["loss_ema"] == rb["loss_ema"]  # exact: the step-2 loss sees the fp32 weights of step 1
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["model_spec"] == b["model_spec"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    engine = SegEngine.load(ModelConfig(type="toy", checkpoint=str(tmp_path / "a.pt"), device="cpu"))
    assert engine.image_size == a["model_spec"]["image_size"] and "toy" in engine.label


@pytest.mark.slow
def test_data_parallel_workers_reproduce_and_differ_from_one_worker(tmp_path):
    """``--workers 2``: two gloo processes average their gradients every step; the same seed,
    steps and workers give the same weights, and the second worker's scenes really change them."""
    kw = dict(seed=5, steps=2, spec_name="p16e160", batch_images=2, threads=2, eval_every=10_000,
              eval_images=2, bf16=True)  # the shipped recipe's bf16 autocast
    res = train(str(tmp_path / "a.pt"), workers=2, **kw)
    assert res["steps"] == 2
    res_b = train(str(tmp_path / "b.pt"), workers=2, **kw)
    assert res["loss_ema"] == res_b["loss_ema"]  # exact, so the fp32 weights agreed too
    train(str(tmp_path / "one.pt"), workers=1, **kw)
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    assert a["meta"]["workers"] == 2 and "--workers 2" in a["meta"]["command"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert any(not torch.equal(a["state_dict"][k], one["state_dict"][k]) for k in a["state_dict"])
    SegEngine.load(ModelConfig(type="toy", checkpoint=str(tmp_path / "a.pt"), device="cpu"))


def test_a_time_limit_does_not_change_a_step_defined_schedule(tmp_path):
    """``--steps`` with ``--minutes``: the minutes only stop the run; the learning rates (and so the
    weights) are those of ``--steps`` alone. A limit that is reached stops early."""
    kw = dict(seed=4, spec_name="p16e160", batch_images=2, threads=1, eval_every=10_000, eval_images=2,
              bf16=False)
    plain = train(str(tmp_path / "a.pt"), steps=3, **kw)
    limited = train(str(tmp_path / "b.pt"), steps=3, minutes=1000.0, **kw)
    assert plain["loss_ema"] == limited["loss_ema"] and limited["steps"] == 3
    stopped = train(str(tmp_path / "c.pt"), steps=1000, minutes=1e-9, **kw)
    assert stopped["steps"] == 0
