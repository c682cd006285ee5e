"""Which device the model runs on, and a clear error when a GPU was asked for but CUDA cannot use it.

``resolve_device`` is what ``SegEngine`` calls. It fails fast with :class:`GPUUnavailableError`
when ``model.device`` is ``cuda``/``cuda:N``, or when Ray assigned this worker a GPU, and CUDA is
not usable: a vit_h job that silently runs on the CPU takes minutes per frame. The message names
the GPU and driver (from ``nvidia-smi`` or ``/proc/driver/nvidia``), torch's CUDA build, the driver
that build needs, and torch's own reason.

Test-only opt-out: ``HQSEG_ALLOW_CPU_FALLBACK=1`` makes a Ray-assigned fake GPU (Ray tests that
declare ``num_gpus`` on a machine without one) run on the CPU with one warning, as before. It does
not apply to an explicit ``device: cuda``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Optional

logger = logging.getLogger(__name__)

FALLBACK_ENV = "HQSEG_ALLOW_CPU_FALLBACK"

#: Minimum Linux driver of each CUDA toolkit a torch wheel is built against (NVIDIA's CUDA Toolkit
#: release notes, "CUDA Toolkit and Corresponding Driver Versions", GA releases). Within one major
#: version CUDA's minor-version compatibility runs most kernels on an older driver of that major
#: (12.x: >= 525.60.13; 13.x: >= 580), but PTX JIT and some libraries need the listed one.
MIN_DRIVER_FOR_CUDA: dict[str, str] = {
    "11.8": "520.61.05",
    "12.1": "530.30.02",
    "12.4": "550.54.14",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}

_warned_fallback = False


class GPUUnavailableError(ValueError):
    """A GPU was required (``device: cuda`` or a Ray-assigned GPU) but CUDA is not usable."""


def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def min_driver(cuda_version: Optional[str]) -> Optional[str]:
    """The driver a torch build for ``cuda_version`` (e.g. ``13.0``) needs; None if unknown/CPU build."""
    if not cuda_version:
        return None
    key = ".".join(cuda_version.split(".")[:2])
    if key in MIN_DRIVER_FOR_CUDA:
        return MIN_DRIVER_FOR_CUDA[key]
    known = sorted(MIN_DRIVER_FOR_CUDA, key=version_tuple)
    older = [k for k in known if version_tuple(k) <= version_tuple(key)]
    return MIN_DRIVER_FOR_CUDA[older[-1]] if older else None


@dataclass
class CudaReport:
    """What this process can tell about its GPUs, without needing CUDA to work."""

    torch_version: str
    torch_cuda: Optional[str]           # torch.version.cuda; None for a CPU-only build
    cuda_available: bool
    init_error: Optional[str]           # torch's reason when CUDA does not initialise
    driver: Optional[str]               # NVIDIA kernel driver version, if a driver is loaded
    gpus: list[str] = field(default_factory=list)  # GPU names from nvidia-smi
    visible_devices: Optional[str] = None           # CUDA_VISIBLE_DEVICES
    ray_gpu_ids: list = field(default_factory=list)  # GPUs Ray assigned to this worker

    @property
    def required_driver(self) -> Optional[str]:
        return min_driver(self.torch_cuda)

    @property
    def driver_too_old(self) -> bool:
        need = self.required_driver
        return bool(self.driver and need and version_tuple(self.driver) < version_tuple(need))

    def describe(self) -> str:
        gpu = ", ".join(self.gpus) if self.gpus else "none found by nvidia-smi"
        driver = self.driver or "no NVIDIA driver loaded"
        build = f"CUDA {self.torch_cuda}" if self.torch_cuda else "CPU-only (no CUDA)"
        need = f" (needs driver >= {self.required_driver})" if self.required_driver else ""
        parts = [f"GPU: {gpu}", f"driver: {driver}", f"torch {self.torch_version} built for {build}{need}"]
        if self.visible_devices is not None:
            parts.append(f"CUDA_VISIBLE_DEVICES={self.visible_devices!r}")
        if self.init_error:
            parts.append(f"torch says: {self.init_error.splitlines()[0]}")
        return "; ".join(parts)

    def fix(self) -> str:
        if not self.torch_cuda:
            return "install a CUDA build of torch (deploy/Dockerfile does: docs/deploy.md, 'CUDA stack')"
        if self.driver_too_old:
            return (f"run on a node image with driver >= {self.required_driver} (docs/deploy.md, 'CUDA stack'), "
                    f"or install a torch build for the CUDA this driver supports")
        if not self.driver:
            return ("no NVIDIA driver on this node/container: use a GPU node image (docs/deploy.md) and the "
                    "NVIDIA container runtime (docker --gpus / the device plugin on Kubernetes)")
        if self.visible_devices == "":
            return "CUDA_VISIBLE_DEVICES is empty: this process was given no GPU"
        return "run `hqseg doctor` on this node for the full check"


def _nvidia_smi() -> tuple[Optional[str], list[str]]:
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            rows = [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines() if line.strip()]
            if out.returncode == 0 and rows:
                return rows[0][-1], [r[0] for r in rows]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        text = open("/proc/driver/nvidia/version").read()
        m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", text)
        return (m.group(1) if m else None), []
    except OSError:
        return None, []


def ray_gpu_ids() -> list:
    ray = sys.modules.get("ray")
    if ray is None:
        return []
    try:
        return list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except Exception:  # not in a Ray worker
        return []


def cuda_report() -> CudaReport:
    import torch

    init_error = None
    ok = torch.cuda.is_available()
    if not ok and torch.version.cuda:
        try:
            torch.cuda.init()
        except Exception as exc:  # noqa: BLE001 - torch's reason is what we report
            init_error = f"{exc.__class__.__name__}: {exc}"
    driver, gpus = _nvidia_smi()
    return CudaReport(torch_version=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=ok,
                      init_error=init_error, driver=driver, gpus=gpus,
                      visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), ray_gpu_ids=ray_gpu_ids())


def resolve_device(requested: str):
    """auto | cpu | cuda | cuda:N -> a usable torch.device (see ModelConfig.device); fails fast."""
    import torch

    global _warned_fallback
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda" if requested == "auto" else requested)
    assigned = ray_gpu_ids()
    if requested == "auto" and not assigned:
        return torch.device("cpu")
    if requested == "auto" and os.environ.get(FALLBACK_ENV) == "1":
        if not _warned_fallback:
            _warned_fallback = True
            logger.warning("Ray assigned GPU(s) %s but CUDA is not usable; running on the CPU because %s=1 "
                           "(test-only)", assigned, FALLBACK_ENV)
        return torch.device("cpu")
    report = cuda_report()
    why = (f"model.device is {requested!r}" if requested != "auto"
           else f"Ray assigned GPU(s) {assigned} to this worker (model.device: auto)")
    raise GPUUnavailableError(f"{why} but CUDA is not available: {report.describe()}. Fix: {report.fix()}. "
                              "Refusing to run the model on the CPU.")


def apply_tf32(device, enabled: bool) -> None:
    """``model.tf32``: let float32 matmuls and convolutions on CUDA use TF32 tensor cores (Ampere and
    newer; about 8x the float32 matmul rate on an H100, 10 mantissa bits instead of 23). Process-wide,
    like torch's own switches; no effect on the CPU."""
    import torch

    if device.type != "cuda" or not enabled:
        return
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9: do not mix with the legacy API
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:  # pragma: no cover - older torch
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
