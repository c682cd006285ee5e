"""One real Serve instance on 127.0.0.1 for all serve tests (starting Serve is slow).

The engine runs a small random-weight SAM-HQ saved as a 'toy' checkpoint, so the tests do not
depend on the trained toy's quality; the tests compare against ``SegEngine`` loaded from the
same file in this process.
"""

from __future__ import annotations

import io
import os
import shutil
import socket

import numpy as np
import pytest

pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

SERVE_SETTINGS = {
    "num_gpus": 0, "num_cpus": 1, "batch_wait_timeout_s": 0.5,
    "cache_max_bytes": 700_000,  # 3 images of the small model (192 KiB each plus mask logits)
    "cache_ttl_s": 6.0,
    "max_upload_bytes": 2_000_000, "max_image_pixels": 1_000_000, "max_prompts": 8, "max_points": 16,
    "max_sessions": 2, "session_ttl_s": 60.0, "max_video_frames": 40, "session_chunk_frames": 8,
    "max_json_bytes": 20_000,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_bytes(image: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def scene(seed: int = 0, h: int = 120, w: int = 160) -> np.ndarray:
    """A uint8 RGB image with a few flat rectangles on noise."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, h - 30), rng.integers(0, w - 30)
        img[y:y + 30, x:x + 40] = rng.integers(100, 255, size=3, dtype=np.uint8)
    return img


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    from hqseg_ray.model.registry import save_spec_checkpoint
    from tests.model.helpers import SMALL_SPEC, small_sam

    path = tmp_path_factory.mktemp("serve-model") / "small-toy.pt"
    save_spec_checkpoint(small_sam(), SMALL_SPEC, path, half=False)
    return str(path)


@pytest.fixture(scope="session")
def model_config(small_checkpoint):
    return {"type": "toy", "checkpoint": small_checkpoint, "device": "cpu"}


@pytest.fixture(scope="session")
def engine(model_config):
    from hqseg_ray.config import ModelConfig
    from hqseg_ray.model.engine import SegEngine

    return SegEngine.load(ModelConfig.model_validate(model_config))


@pytest.fixture(scope="session")
def allowed_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("allowed")
    (d / "inside.png").write_bytes(png_bytes(scene(7)))
    return d


@pytest.fixture(scope="package")
def server(model_config, allowed_dir, tmp_path_factory):
    """Base URL of a running hqseg Serve application, shared by tests/serve/ and shut down after
    its last test (so later test packages can start their own Ray in this process)."""
    import ray
    from ray import serve

    from hqseg_ray.serve.app import build_app

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():  # an earlier test package left its cluster up: ours needs its own
        ray.shutdown()
    port = free_port()
    # a private local cluster: other tests and jobs on this machine may run their own Ray, and
    # ray.init() would join theirs; its own temp dir keeps theirs from joining ours
    temp_dir = f"/tmp/hqs{os.getpid()}"  # short: Ray's socket paths live under it
    ray.init(address="local", num_cpus=4, include_dashboard=False,  # logical: room for a bulk job
             _temp_dir=temp_dir,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        settings = {**SERVE_SETTINGS, "port": port, "allowed_uri_prefixes": [f"file://{allowed_dir}/"]}
        serve.run(build_app({"model": model_config, "serve": settings}), name="hqseg", route_prefix="/")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as c:
            assert c.get("/healthz").status_code == 200
        yield base
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


from tests.serve.ui_helpers import ui_app  # noqa: E402,F401 -- the review page's toy application
