"""Fail fast when a GPU is required but CUDA cannot use it (hqseg_ray/model/gpu.py).

This machine has no GPU, so these are the real failure paths: torch's CUDA build with no driver, a
fake ``nvidia-smi`` reporting a driver too old for torch's CUDA, a GPU that Ray assigned (fake GPU
resources), and the test-only opt-out."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from hqseg_ray.config import ModelConfig
from hqseg_ray.model import gpu
from hqseg_ray.model.engine import SegEngine
from hqseg_ray.model.gpu import GPUUnavailableError, min_driver, resolve_device
from tests.model.helpers import small_sam

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="these test the no-usable-CUDA paths")
RANDOM = dict(type="vit_b", checkpoint=None, allow_random_init=True)


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    """An nvidia-smi that reports an H100 with a 550 driver (too old for a CUDA 13 torch)."""
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 550.54.15'\necho 'NVIDIA H100 80GB HBM3, 550.54.15'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv(gpu.FALLBACK_ENV, raising=False)


def test_explicit_cuda_error_names_gpu_driver_and_torch_cuda(fake_smi):
    with pytest.raises(GPUUnavailableError) as exc:
        SegEngine(small_sam(), ModelConfig(**RANDOM, device="cuda"))
    text = str(exc.value)
    assert "model.device is 'cuda' but CUDA is not available" in text
    assert "GPU: NVIDIA H100 80GB HBM3, NVIDIA H100 80GB HBM3" in text and "driver: 550.54.15" in text
    assert f"torch {torch.__version__} built for CUDA {torch.version.cuda}" in text
    if torch.version.cuda and min_driver(torch.version.cuda):
        assert f"needs driver >= {min_driver(torch.version.cuda)}" in text
        assert "Fix: run on a node image with driver >=" in text


def test_no_driver_at_all_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setattr(gpu, "_nvidia_smi", lambda: (None, []))
    with pytest.raises(GPUUnavailableError, match="GPU: none found by nvidia-smi; driver: no NVIDIA driver loaded"):
        resolve_device("cuda:1")


def test_ray_assigned_gpu_fails_fast(monkeypatch, fake_smi):
    monkeypatch.setattr(gpu, "ray_gpu_ids", lambda: [3])
    with pytest.raises(GPUUnavailableError, match=r"Ray assigned GPU\(s\) \[3\] to this worker"):
        resolve_device("auto")


def test_test_only_opt_out_for_fake_gpus(monkeypatch, fake_smi):
    monkeypatch.setattr(gpu, "ray_gpu_ids", lambda: [0])
    monkeypatch.setenv(gpu.FALLBACK_ENV, "1")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(GPUUnavailableError):  # never for an explicit device: cuda
        resolve_device("cuda")


def test_cpu_and_auto_without_ray_gpu_stay_on_cpu(monkeypatch):
    monkeypatch.setattr(gpu, "ray_gpu_ids", lambda: [])
    assert resolve_device("cpu").type == "cpu" and resolve_device("auto").type == "cpu"


def test_min_driver_table():
    assert min_driver("13.0") == "580.65.06"
    assert min_driver("12.8") == "570.26"
    assert min_driver("13.2") == "580.65.06"  # newer minor: the major's floor we know
    assert min_driver(None) is None


def test_tf32_switch_only_on_cuda():
    matmul = torch.backends.cuda.matmul
    before = (matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision)
    try:
        gpu.apply_tf32(torch.device("cpu"), True)
        assert matmul.fp32_precision == before[0]
        gpu.apply_tf32(torch.device("cuda"), True)
        assert matmul.fp32_precision == "tf32" and torch.backends.cudnn.conv.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before


@pytest.mark.ray
def test_actor_on_a_fake_ray_gpu(tmp_path):
    """A Ray actor given a (fake) GPU: the engine refuses to run on the CPU, unless the test opt-out
    is set in the worker's environment."""
    import ray

    ray.init(address="local", num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False,
             _temp_dir=f"/tmp/hqg{os.getpid()}")
    try:
        @ray.remote(num_gpus=1, num_cpus=0)
        def build():
            from hqseg_ray.config import ModelConfig
            from hqseg_ray.model.engine import SegEngine
            from tests.model.helpers import small_sam

            return str(SegEngine(small_sam(), ModelConfig(**RANDOM, device="auto")).device)

        with pytest.raises(ray.exceptions.RayTaskError, match="Ray assigned GPU.*CUDA is not available.*driver"):
            ray.get(build.remote())
        opted_out = build.options(runtime_env={"env_vars": {gpu.FALLBACK_ENV: "1"}}).remote()
        assert ray.get(opted_out) == "cpu"
    finally:
        ray.shutdown()
