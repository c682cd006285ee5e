"""Registry: building every type, strict loading, and every checkpoint source."""

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
import torch

from hqseg_ray.config import ModelConfig
from hqseg_ray.model import registry
from hqseg_ray.model.engine import SegEngine
from hqseg_ray.model.registry import (OFFICIAL_CHECKPOINTS, CheckpointError, build_model, load_model,
                                      load_state_strict, resolve_checkpoint, save_spec_checkpoint)
from tests.model.helpers import SMALL_SPEC, small_sam


@pytest.mark.parametrize("model_type", ["vit_tiny", "vit_b", "vit_l", "vit_h"])
def test_every_official_type_builds(model_type):
    sam = build_model(model_type)
    assert sam.image_encoder.img_size == 1024
    assert not sam.training


def test_official_files_recorded():
    assert OFFICIAL_CHECKPOINTS["vit_b"].size_bytes == 379_335_069
    assert OFFICIAL_CHECKPOINTS["vit_l"].size_bytes == 1_254_865_805
    assert OFFICIAL_CHECKPOINTS["vit_h"].size_bytes == 2_570_940_653
    assert OFFICIAL_CHECKPOINTS["vit_tiny"].size_bytes == 42_526_881
    assert all(c.url.startswith("https://") and c.url.endswith(c.filename) for c in OFFICIAL_CHECKPOINTS.values())


def test_vit_b_weights_given_as_vit_h_say_so():
    state = build_model("vit_b").state_dict()
    with pytest.raises(CheckpointError) as exc:
        load_state_strict(build_model("vit_h"), state, "b.pth", "vit_h")
    text = str(exc.value)
    assert "'b.pth'" in text and "'vit_h'" in text and "looks like vit_b" in text
    assert "missing keys" in text and "image_encoder.blocks.12" in text


@pytest.fixture
def toy_file(tmp_path):
    sam = small_sam(3)
    path = save_spec_checkpoint(sam, SMALL_SPEC, tmp_path / "small.pt", meta={"note": "test"})
    return sam, path


def test_spec_checkpoint_roundtrip_strict(toy_file):
    sam, path = toy_file
    model, info = load_model("toy", str(path))
    assert info["label"] == registry.TOY_LABEL and not info["random_init"]
    for k, v in sam.state_dict().items():
        assert torch.allclose(model.state_dict()[k], v.half().float(), atol=0), k
    eng = SegEngine.load(ModelConfig(type="toy", checkpoint=f"file://{path}", device="cpu"))
    assert eng.image_size == SMALL_SPEC.image_size and "toy" in eng.label


def test_plain_state_dict_of_wrong_shape_fails(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(small_sam().state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit model type 'vit_b'.*shape mismatches"):
        load_model("vit_b", str(path))


def test_truncated_and_corrupt_files(toy_file, tmp_path):
    _, path = toy_file
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_model("toy", str(cut))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_model("toy", str(junk))
    with pytest.raises(CheckpointError, match="file not found"):
        load_model("toy", str(tmp_path / "nope.pt"))


def test_sha256_checked_for_local_files(toy_file):
    _, path = toy_file
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    assert resolve_checkpoint(str(path), "toy", sha256=good) == path
    with pytest.raises(CheckpointError, match="sha256"):
        resolve_checkpoint(str(path), "toy", sha256="0" * 64)


def test_random_init_needs_flag():
    with pytest.raises(ValueError, match="allow_random_init"):
        ModelConfig(type="vit_b", checkpoint=None)
    with pytest.raises(CheckpointError):
        load_model("vit_b", None)


# ---------------------------------------------------------------------------- local HTTP server
class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):  # noqa: N802
        name = self.path.lstrip("/")
        if name.startswith("truncated/"):
            body = self.files[name.split("/", 1)[1]]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        if name not in self.files:
            self.send_error(404, "not here")
            return
        body = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def http_server(toy_file):
    _, path = toy_file
    _Handler.files = {"toy.pt": path.read_bytes()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", path
    server.shutdown()
    server.server_close()


def _cache_files(cache: Path):
    """Files in the cache, less the per-file lock files of the fetcher (empty, kept between runs)."""
    return sorted(p.name for p in cache.rglob("*") if p.is_file() and p.suffix != ".lock") if cache.exists() else []


def test_http_download_good_file_is_cached(http_server, tmp_path):
    base, path = http_server
    cache = tmp_path / "cache"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    cfg = ModelConfig(type="toy", checkpoint=f"{base}/toy.pt", checkpoint_sha256=sha, cache_dir=str(cache), device="cpu")
    eng = SegEngine.load(cfg)
    assert eng.image_size == SMALL_SPEC.image_size
    files = _cache_files(cache)
    assert len(files) == 1 and files[0].endswith("toy.pt")
    # second resolve uses the cache (server down would not matter)
    assert resolve_checkpoint(f"{base}/toy.pt", "toy", sha, cache).read_bytes() == path.read_bytes()


@pytest.mark.parametrize("url_path, sha, message", [
    ("toy.pt", "0" * 64, "does not match expected"),
    ("truncated/toy.pt", None, "after 2 attempts: (transfer ended after|connection cut)"),
    ("missing.pt", None, "HTTP 404"),
])
def test_http_failures_leave_no_partial_file(http_server, tmp_path, monkeypatch, url_path, sha, message):
    monkeypatch.setenv("HQSEG_FETCH_ATTEMPTS", "2")  # the truncating server never sends the whole file
    monkeypatch.setenv("HQSEG_FETCH_BASE_DELAY_S", "0.01")
    base, _ = http_server
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match=message):
        resolve_checkpoint(f"{base}/{url_path}", "toy", sha, cache)
    assert _cache_files(cache) == []


def test_unreachable_s3_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    uri = "s3://no-such-bucket/toy.pt?endpoint_override=http://127.0.0.1:9&connect_timeout=1&request_timeout=1&retry_strategy=standard"
    with pytest.raises(CheckpointError, match="no-such-bucket"):
        resolve_checkpoint(uri, "toy", None, tmp_path)
    assert _cache_files(tmp_path) == []
