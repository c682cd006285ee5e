"""The Ray version, image name and RayService Serve config cannot drift from the project's files."""

from __future__ import annotations

import shutil

import pytest
import yaml

from hqseg_ray import manifests

from .helpers import ROOT


def test_no_drift():
    """Fails when pyproject.toml / configs/serve.yaml changed without `python -m hqseg_ray.manifests render`."""
    assert manifests.check(ROOT) == []


def test_ray_pin_matches_installed_ray():
    import ray

    assert manifests.ray_version_pin(ROOT) == ray.__version__


def test_committed_rayservice_equals_rendering():
    committed = (ROOT / manifests.RAYSERVICE).read_text()
    rendered = manifests.render_rayservice(committed, (ROOT / manifests.SERVE_CONFIG).read_text())
    assert rendered == committed, "deploy/rayservice.yaml is stale: run python -m hqseg_ray.manifests render"
    embedded = yaml.safe_load(yaml.safe_load(committed)["spec"]["serveConfigV2"])
    assert embedded == yaml.safe_load((ROOT / manifests.SERVE_CONFIG).read_text())


@pytest.fixture
def checkout(tmp_path):
    """A copy of the files the tool reads, to break on purpose."""
    for name in ("pyproject.toml", "configs/serve.yaml", "cluster", "deploy"):
        src, dst = ROOT / name, tmp_path / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return tmp_path


def test_check_catches_each_kind_of_drift(checkout):
    pyproject = checkout / "pyproject.toml"
    pin = manifests.ray_version_pin(ROOT)
    pyproject.write_text(pyproject.read_text().replace(f"ray[data,serve]=={pin}", "ray[data,serve]==9.9.9"))
    serve = checkout / "configs/serve.yaml"
    serve.write_text(serve.read_text().replace("max_replicas: 8", "max_replicas: 9"))
    problems = "\n".join(manifests.check(checkout))
    assert "image tag '0.1.0-ray2.60.0', expected '0.1.0-ray9.9.9'" in problems
    assert "Dockerfile: RAY_VERSION 2.60.0, pyproject.toml pins 9.9.9" in problems
    assert "rayVersion 2.60.0" in problems
    assert "cluster/gcp-h200.yaml: checks for Ray 2.60.0, pyproject.toml pins 9.9.9" in problems
    assert "serveConfigV2 differs" in problems
    for name in ("cluster/aws-a100.yaml", "deploy/rayjob.yaml", "deploy/rayservice.yaml"):
        assert name in problems


def test_render_fixes_generated_parts_and_is_idempotent(checkout):
    serve = checkout / "configs/serve.yaml"
    serve.write_text(serve.read_text().replace("max_replicas: 8", "max_replicas: 9"))
    changed = manifests.render(checkout)
    assert [p.relative_to(checkout).as_posix() for p in changed] == ["deploy/rayservice.yaml"]
    assert manifests.check(checkout) == []
    assert manifests.render(checkout) == []
    text = (checkout / "deploy/rayservice.yaml").read_text()
    assert "max_replicas: 9" in text and text.startswith("# kubectl apply")


def test_render_follows_a_new_ray_pin(checkout):
    pin = manifests.ray_version_pin(ROOT)
    pyproject = checkout / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f"ray[data,serve]=={pin}", "ray[data,serve]==9.9.9"))
    assert manifests.check(checkout)
    manifests.render(checkout)
    assert manifests.check(checkout) == []
    assert "ARG RAY_VERSION=9.9.9" in (checkout / "deploy/Dockerfile").read_text()
    assert "ray.__version__ == '9.9.9'" in (checkout / "cluster/aws-a100.yaml").read_text()


def test_cli_check_exit_codes(checkout, capsys):
    assert manifests.main(["check", "--root", str(checkout)]) == 0
    (checkout / "deploy/rayservice.yaml").write_text(
        (checkout / "deploy/rayservice.yaml").read_text().replace("max_replicas: 8", "max_replicas: 7"))
    assert manifests.main(["check", "--root", str(checkout)]) == 1
    assert "serveConfigV2 differs" in capsys.readouterr().err


def test_ray_version_spellings():
    text = "pip install hqseg-ray==0.1.0 'ray[default]==2.1.0' ray==1.0\nrayVersion: \"2.1\"\nARG RAY_VERSION=2.1\n"
    assert manifests.render_ray_version(text, "2.60.0") == (
        "pip install hqseg-ray==0.1.0 'ray[default]==2.60.0' ray==2.60.0\nrayVersion: \"2.60.0\"\n"
        "ARG RAY_VERSION=2.60.0\n")
