"""Serve pieces without a server: the bounded cache, the URI policy, image decoding, config."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from hqseg_ray.serve.cache import BoundedCache, TooLarge
from hqseg_ray.serve.errors import PayloadTooLarge
from hqseg_ray.serve.uris import URIRefused, check_uri


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def test_cache_lru_by_bytes_and_ttl():
    clock, evicted = Clock(), []
    c = BoundedCache(100, ttl_s=10, clock=clock, on_evict=lambda k, v, why: evicted.append((k, why)))
    c.put("a", 1, 40)
    c.put("b", 2, 40)
    assert c.get("a") == 1  # a is now most recent
    c.put("c", 3, 40)  # 120 > 100: evicts b, the least recently used
    assert "b" not in c and c.nbytes == 80 and evicted == [("b", "bytes")]
    clock.t = 5
    c.get("c")
    clock.t = 12  # a idle 12 s > 10, c idle 7 s
    assert c.get("a") is None and c.get("c") == 3 and ("a", "ttl") in evicted
    with pytest.raises(TooLarge):
        c.put("huge", 0, 101)
    c.resize("c", 90)
    assert c.nbytes == 90
    assert c.pop("c") == 3 and c.nbytes == 0


def test_cache_count_bound():
    c = BoundedCache(10**9, ttl_s=10, max_items=2)
    for k in "abc":
        c.put(k, k, 1)
    assert list(c.keys()) == ["b", "c"] and not c.would_fit_count()


def test_uri_policy(tmp_path):
    allowed = [f"file://{tmp_path}/ok/", "s3://bucket/clips/", "https://example.com/media/"]
    (tmp_path / "ok").mkdir()
    assert check_uri(f"file://{tmp_path}/ok/a.png", allowed).path.endswith("/ok/a.png")
    assert check_uri("s3://bucket/clips/a.mp4", allowed)
    for bad in [f"file://{tmp_path}/other.png", f"file://{tmp_path}/ok/../x", "s3://bucket/other/a.mp4",
                "s3://bucket/clips/../../x", "gs://bucket/clips/a.mp4", "http://169.254.169.254/",
                "http://169.254.1.1/media/", "http://[fd00:ec2::254]/", "http://metadata.google.internal/",
                "file://otherhost/etc/passwd", "javascript:alert(1)"]:
        with pytest.raises(URIRefused):
            check_uri(bad, allowed)
    with pytest.raises(URIRefused, match="reads no URIs"):
        check_uri("s3://bucket/clips/a.mp4", [])


def test_decode_image_bounds():
    from hqseg_ray.serve.inputs import decode_image
    from tests.serve.conftest import png_bytes

    img = np.zeros((30, 40, 3), dtype=np.uint8)
    assert decode_image(png_bytes(img), 10_000).shape == (30, 40, 3)
    with pytest.raises(PayloadTooLarge, match="1200 pixels"):
        decode_image(png_bytes(img), 1000)
    with pytest.raises(ValueError, match="not an image"):
        decode_image(b"GIF89a-not-really", 10_000)


def test_mask_to_low_res_round_trip(engine):
    """A mask turned into mask-input logits and back through postprocess stays the same mask."""
    from hqseg_ray.serve.inputs import mask_to_low_res_logits
    import torch

    mask = np.zeros((120, 160), dtype=bool)
    mask[20:80, 40:120] = True
    emb = engine.encode(np.zeros((1, 120, 160, 3), dtype=np.uint8))
    lr = mask_to_low_res_logits(mask, emb.input_sizes[0], engine.image_size, engine.low_res_size)
    assert lr.shape == tuple(engine.low_res_size)
    back = engine.postprocess(emb, [0], torch.from_numpy(lr)[None])[0]
    assert (back == mask).mean() > 0.98


SERVE_CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "serve*.yaml")))


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=os.path.basename)
def test_serve_configs_build(path):
    """Every serve config builds an application (no Ray needed to build one)."""
    from hqseg_ray.config import load_yaml
    from hqseg_ray.serve.app import build_app

    data = load_yaml(path)
    if "applications" in data:
        for a in data["applications"]:
            assert a["import_path"] == "hqseg_ray.serve.app:build_app"
            names = {d["name"] for d in a.get("deployments", [])}
            assert names <= {"SegEngineDeployment", "HQSegAPI"}
            build_app(a.get("args"), a.get("deployments"))
    else:
        build_app(data)


def test_plan_serve_from_both_config_kinds():
    from hqseg_ray.config import load_yaml
    from hqseg_ray.serve.command import plan_serve

    root = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
    host, port, apps = plan_serve(load_yaml(os.path.join(root, "serve-demo.yaml"), ["serve.port=8123"]))
    assert (host, port) == ("127.0.0.1", 8123) and apps[0][0] == "hqseg" and apps[0][2]["model"]["type"] == "toy"
    host, port, apps = plan_serve(load_yaml(os.path.join(root, "serve.yaml")))
    assert port == 8000 and {d["name"] for d in apps[0][3]} == {"SegEngineDeployment", "HQSegAPI"}
    with pytest.raises(ValueError, match="import_path"):
        plan_serve({"applications": [{"name": "x", "import_path": "other:app"}]})
    with pytest.raises(ValueError, match="serve.port"):
        plan_serve({"serve": {"port": 0}})


def test_build_app_applies_config_and_overrides():
    from hqseg_ray.serve.app import build_app

    app = build_app({"model": {"type": "toy"}, "serve": {"num_gpus": 0.5, "max_replicas": 3, "min_replicas": 0}},
                    [{"name": "SegEngineDeployment", "max_ongoing_requests": 12}])
    api = app._bound_deployment
    engine = api.init_args[0]._bound_deployment
    assert api.name == "HQSegAPI" and api.num_replicas == 1
    assert engine.name == "SegEngineDeployment" and engine.ray_actor_options["num_gpus"] == 0.5
    assert engine.max_ongoing_requests == 12
    assert engine._deployment_config.autoscaling_config.max_replicas == 3


def test_resolve_args_from_serve_run_strings():
    """`serve run hqseg_ray.serve.app:build_app config=PATH overrides=a=b,c=d` passes strings."""
    from hqseg_ray.serve.app import resolve_args

    path = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "serve-demo.yaml")
    data = resolve_args({"config": path, "overrides": "serve.port=9000,serve.cache_ttl_s=5"})
    assert data["serve"]["port"] == 9000 and data["serve"]["cache_ttl_s"] == 5
    with pytest.raises(ValueError, match="serve.bogus"):
        resolve_args({"serve": {"bogus": 1}})
