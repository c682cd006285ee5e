"""The shipped GPU configs (configs/label-gpu.yaml, configs/serve.yaml) validate, and build their
Serve application, without downloading any weights (no network, no 2.57 GB vit_h checkpoint)."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from .helpers import ROOT, load_yaml


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"a config check tried to reach the network: {args[:1]}")

    from hqseg_ray.model import fetch

    monkeypatch.setattr(fetch, "download", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_label_gpu_validates_offline(no_network, capsys):
    from hqseg_ray.cli import main

    path = ROOT / "configs" / "label-gpu.yaml"
    assert path.read_text().startswith("# hqseg label configs/label-gpu.yaml ")
    assert main(["validate", str(path), "--no-probe", "--set", "input.manifest=null"]) == 0, capsys.readouterr()


def test_serve_config_builds_offline(no_network):
    pytest.importorskip("ray.serve")
    from hqseg_ray.serve.app import build_app

    serve = load_yaml(ROOT / "configs" / "serve.yaml")
    for app in serve["applications"]:
        assert app["args"]["model"]["type"] == "vit_h"
        build_app(app.get("args"), app.get("deployments"))


def test_pipeline_input_size_of_a_real_model_needs_no_download(no_network):
    """The job driver asks the model's input size before any actor loads it (hqseg_ray.pipeline)."""
    from hqseg_ray.model.registry import model_input_size

    assert model_input_size("vit_h", "auto") == 1024
