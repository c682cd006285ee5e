"""`hqseg doctor` on this GPU-less machine: it runs, reports what it would check on a GPU node, and
catches the real problems it can see here (driver too old via a fake nvidia-smi, unreachable or
unauthorised checkpoints on a 127.0.0.1 server, a pinned sha256 that does not match)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import stat
import threading
from pathlib import Path

import pytest
import torch

from hqseg_ray.cli import main
from hqseg_ray.doctor import model_and_compute
from hqseg_ray.model.official import OFFICIAL_CHECKPOINTS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the GPU-less report")


def doctor(capsys, *argv) -> tuple[int, dict]:
    rc = main(["doctor", "--json", *argv])
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    return rc, {c["name"]: c for c in report["checks"]}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in ("RAY_ADDRESS", "HF_TOKEN", "HQSEG_CHECKPOINT_AUTH", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HQSEG_WEIGHTS_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("HQSEG_CACHE", str(tmp_path / "cache"))


def test_runs_here_and_reports_what_it_would_check_on_a_gpu(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    rc, checks = doctor(capsys, "--model", "toy")
    assert rc == 0
    assert checks["torch"]["status"] == "ok" and f"CUDA {torch.version.cuda}" in checks["torch"]["detail"]
    assert checks["driver/GPU"]["status"] == "skip" and "on a GPU node this checks" in checks["driver/GPU"]["detail"]
    assert checks["Ray cluster"]["status"] == "skip"
    assert checks["checkpoint"]["status"] == "ok" and "sha256" in checks["checkpoint"]["detail"]
    run = checks["one-frame run"]
    assert run["status"] == "ok" and "encode" in run["detail"] and "ms" in run["detail"]
    iou = float(run["detail"].rsplit("IoU with the drawn box ", 1)[1])
    assert iou > 0.8  # the toy segments the drawn rectangle: the run is real


def test_require_gpu_fails_here(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    rc, checks = doctor(capsys, "--model", "toy", "--skip-model", "--require-gpu")
    assert rc == 1 and checks["driver/GPU"]["status"] == "FAIL"


def test_old_driver_is_named_with_the_fix(capsys, monkeypatch, tmp_path):
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 550.54.15'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    rc, checks = doctor(capsys, "--model", "toy", "--skip-model")
    assert rc == 1
    assert checks["driver"]["status"] == "FAIL" and "550.54.15" in checks["driver"]["detail"]
    assert "driver >=" in checks["driver"]["fix"]
    assert checks["CUDA"]["status"] == "FAIL" and "NVIDIA H100 80GB HBM3" in checks["CUDA"]["detail"]


class _Hub(http.server.BaseHTTPRequestHandler):
    body = b"x" * 1000

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        if self.path == "/private.pth" and self.headers.get("Authorization") != "Bearer t0k":
            self.send_error(401)
            return
        self.send_response(206)
        self.send_header("Content-Range", f"bytes 0-0/{len(self.body)}")
        self.send_header("X-Linked-Etag", f'"{hashlib.sha256(self.body).hexdigest()}"')
        self.send_header("X-Repo-Commit", "c0ffee")
        self.send_header("Content-Length", "1")
        self.end_headers()
        self.wfile.write(self.body[:1])


@pytest.fixture
def hub():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _config(tmp_path, checkpoint: str, **model) -> str:
    import yaml

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"model": {"type": "vit_b", "checkpoint": checkpoint, **model},
                                    "compute": {"accelerator_type": "H100"}}))
    return str(path)


def test_checkpoint_reachability_size_sha_and_auth(capsys, hub, tmp_path, monkeypatch):
    rc, checks = doctor(capsys, "--config", _config(tmp_path, f"{hub}/public.pth"), "--skip-model")
    c = checks["checkpoint"]
    assert rc == 0 and c["status"] == "ok"
    assert "1000 bytes" in c["detail"] and hashlib.sha256(_Hub.body).hexdigest() in c["detail"]
    assert "revision c0ffee" in c["detail"]
    rc, checks = doctor(capsys, "--config", _config(tmp_path, f"{hub}/private.pth"), "--skip-model")
    assert rc == 1 and "HTTP 401" in checks["checkpoint"]["detail"] and "HF_TOKEN" in checks["checkpoint"]["fix"]
    monkeypatch.setenv("HQSEG_CHECKPOINT_AUTH", "Bearer t0k")
    rc, checks = doctor(capsys, "--config", _config(tmp_path, f"{hub}/private.pth"), "--skip-model")
    assert rc == 0


def test_baked_weights_are_found_and_a_wrong_pin_fails(capsys, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    official = OFFICIAL_CHECKPOINTS["vit_tiny"]
    with open(weights / official.filename, "wb") as f:
        f.truncate(official.size_bytes)  # right size, so the baked copy is used
    monkeypatch.setenv("HQSEG_WEIGHTS_DIR", str(weights))
    config = _config(tmp_path, "auto", checkpoint_sha256="0" * 64)
    rc, checks = doctor(capsys, "--config", config, "--set", "model.type=vit_tiny", "--skip-model")
    assert rc == 1 and checks["checkpoint"]["status"] == "FAIL"
    assert str(weights / official.filename) in checks["checkpoint"]["detail"]


def test_real_model_without_weights_is_skipped_not_downloaded(capsys, tmp_path, monkeypatch, hub):
    """vit_h here: the checkpoint is checked for reachability only; the one-frame run says what it
    would do on the node instead of pulling 2.57 GB."""
    from hqseg_ray.model import fetch

    monkeypatch.setattr(fetch, "download", lambda *a, **k: pytest.fail("doctor must not download"))
    rc, checks = doctor(capsys, "--config", _config(tmp_path, f"{hub}/public.pth"))
    assert checks["one-frame run"]["status"] == "skip" and "times a one-frame encode" in checks["one-frame run"]["detail"]


def test_reads_the_model_of_every_config_kind():
    from hqseg_ray.config import load_yaml

    model, compute = model_and_compute(load_yaml(ROOT / "configs" / "label-gpu.yaml"))
    assert model["type"] == "vit_h" and compute["accelerator_type"] == "H100"
    model, compute = model_and_compute(load_yaml(ROOT / "configs" / "serve.yaml"))
    assert model["type"] == "vit_h" and compute == {}
    model, _ = model_and_compute(load_yaml(ROOT / "configs" / "serve-demo.yaml"))
    assert model["type"] == "toy"
