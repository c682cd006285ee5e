"""`hqseg train-toy` at a few steps: the checkpoint loads strictly and the same seed reproduces it."""

import torch

from hqseg_ray.config import ModelConfig
from hqseg_ray.model.engine import SegEngine
from hqseg_ray.train.toy import train


def test_two_steps_same_seed_same_weights(tmp_path):
    kw = dict(seed=3, steps=2, spec_name="p16e160", batch_images=2, threads=1, eval_every=10_000,
              eval_images=2, bf16=False)
    train(str(tmp_path / "a.pt"), **kw)
    train(str(tmp_path / "b.pt"), **kw)
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["model_spec"] == b["model_spec"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    engine = SegEngine.load(ModelConfig(type="toy", checkpoint=str(tmp_path / "a.pt"), device="cpu"))
    assert engine.image_size == a["model_spec"]["image_size"] and "toy" in engine.label
