"""Image endpoints against a real server: click flow, batching, cache bounds, one-shot contract."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hqseg_ray.masks import rle_decode
from hqseg_ray.prompts import Prompt
from tests.serve.conftest import png_bytes, scene

pytestmark = pytest.mark.e2e


def upload(client, image: np.ndarray) -> str:
    r = client.post("/v1/images", files={"image": ("x.png", png_bytes(image), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["height"], body["width"]) == image.shape[:2]
    return body["image_id"]


def test_healthz_and_openapi(client):
    assert client.get("/healthz").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/images", "/v1/images/{image_id}/segment", "/v1/segment"):
        assert p in paths


def test_click_flow_matches_engine(client, engine):
    """Upload once, click several times (refining with mask_input_id); masks equal SegEngine's."""
    image = scene(1)
    image_id = upload(client, image)
    emb = engine.encode(image[None])
    clicks = [
        {"points": [[60, 50]], "labels": [1]},
        {"points": [[60, 50], [100, 80]], "labels": [1, 0]},
        {"box": [20, 10, 120, 90]},
        {"box": [20, 10, 120, 90], "points": [[70, 40]], "labels": [1]},
    ]
    prev_id, prev_logits = None, None
    for k, click in enumerate(clicks):
        body = {"prompts": [dict(click, **({"mask_input_id": prev_id} if prev_id else {}))]}
        r = client.post(f"/v1/images/{image_id}/segment", json=body)
        assert r.status_code == 200, r.text
        got = r.json()["masks"][0]
        p = Prompt(frame=0, points=click.get("points"), labels=click.get("labels"), box=click.get("box"),
                   mask_input=prev_logits)
        masks, scores, low_res = engine.decode(emb, [p])
        assert got["size"] == list(image.shape[:2])
        np.testing.assert_array_equal(rle_decode(got), masks[0], err_msg=f"click {k}")
        assert got["score"] == pytest.approx(float(scores[0]), abs=1e-4)
        prev_id, prev_logits = got["mask_id"], low_res[0].astype(np.float16).astype(np.float32)
    # per-request decoder options
    for multimask, hq_only in [(True, False), (False, True)]:
        r = client.post(f"/v1/images/{image_id}/segment", json={
            "prompts": [{"points": [[60, 50]], "labels": [1]}], "multimask": multimask, "hq_token_only": hq_only})
        masks, _, _ = engine.decode(emb, [Prompt(points=[[60, 50]], labels=[1])], multimask=multimask,
                                    hq_token_only=hq_only)
        np.testing.assert_array_equal(rle_decode(r.json()["masks"][0]), masks[0])


def test_four_concurrent_clicks_are_one_batch(client):
    ids = [upload(client, scene(10 + i)) for i in range(2)]
    before = client.get("/v1/stats").json()["engine"]

    def click(i):
        return client.post(f"/v1/images/{ids[i % 2]}/segment",
                           json={"prompts": [{"points": [[30 + i, 40]], "labels": [1]}]})

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(click, range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    after = client.get("/v1/stats").json()["engine"]
    assert after["decode_requests"] - before["decode_requests"] == 4
    assert after["decode_batches"] - before["decode_batches"] == 1, after
    assert after["batch_sizes"]["4"] - before["batch_sizes"]["4"] == 1


def test_cache_evicts_by_bytes_then_404(client):
    first = upload(client, scene(20))
    for i in range(4):  # the cache holds 3 small-model images
        upload(client, scene(21 + i))
    r = client.post(f"/v1/images/{first}/segment", json={"prompts": [{"box": [0, 0, 50, 50]}]})
    assert r.status_code == 404
    assert "upload it again" in r.json()["detail"]
    stats = client.get("/v1/stats").json()["images"]
    assert stats["evicted_bytes"] >= 2 and stats["bytes"] <= stats["max_bytes"]


def test_cache_idle_ttl(client, server):
    image_id = upload(client, scene(30))
    assert client.post(f"/v1/images/{image_id}/segment",
                       json={"prompts": [{"box": [0, 0, 50, 50]}]}).status_code == 200
    time.sleep(6.5)  # serve.cache_ttl_s = 6 in the test config
    r = client.post(f"/v1/images/{image_id}/segment", json={"prompts": [{"box": [0, 0, 50, 50]}]})
    assert r.status_code == 404 and "idle" in r.json()["detail"]


def test_one_shot_contract(client, engine):
    image = scene(40)
    r = client.post("/v1/segment", json={"image": base64.b64encode(png_bytes(image)).decode(),
                                         "prompts": [{"box": [20, 10, 120, 90]}, {"box": [0, 0, 60, 60]}]})
    assert r.status_code == 200, r.text
    masks = r.json()["masks"]
    assert len(masks) == 2
    for m in masks:
        assert m["size"] == [120, 160] and isinstance(m["counts"], str)
        assert len(m["bbox_xywh"]) == 4 and 0 <= m["score"] <= 2
    ref, _, _ = engine.decode(engine.encode(image[None]), [Prompt(box=[20, 10, 120, 90])])
    np.testing.assert_array_equal(rle_decode(masks[0]), ref[0])


def test_upload_as_json_raw_and_uri(client, allowed_dir):
    data = png_bytes(scene(50))
    r1 = client.post("/v1/images", json={"image": base64.b64encode(data).decode()})
    r2 = client.post("/v1/images", content=data, headers={"content-type": "image/png"})
    r3 = client.post("/v1/images", json={"uri": f"file://{allowed_dir}/inside.png"})
    for r in (r1, r2, r3):
        assert r.status_code == 200, r.text


def test_short_load_test_has_no_5xx(server):
    """CI version of the load test (the full one is in docs/benchmarks.md): 8 clients x 3 s."""
    import asyncio

    from hqseg_ray.serve.loadtest import run_load

    report = asyncio.run(run_load(server, clients=8, seconds=3.0, images=2, size=(120, 160)))
    assert report["requests"] > 0 and report["5xx"] == 0 and not report["transport_errors"], report
    assert report["status_counts"] == {"200": report["requests"]}
    assert report["mean_decode_batch"] > 1.0  # 8 clients fill decoder batches


def test_prometheus_metrics_exported(client):
    """The project's metrics reach Ray's Prometheus endpoint (prefixed ray_ by Ray)."""
    import httpx
    import ray

    image_id = upload(client, scene(70))
    assert client.post(f"/v1/images/{image_id}/segment", json={"prompts": [{"box": [0, 0, 50, 50]}]}).status_code == 200
    port = ray._private.worker._global_node.metrics_export_port
    want = {"ray_hqseg_requests_total", "ray_hqseg_request_seconds_count", "ray_hqseg_image_cache_lookups_total",
            "ray_hqseg_decode_batch_size_count", "ray_hqseg_engine_seconds_count"}
    names: set = set()
    for _ in range(30):  # the metrics agent exports every few seconds
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line.startswith("ray_hqseg")}
        if want <= names:
            break
        time.sleep(2)
    assert want <= names, sorted(names)


def test_mask_input_as_rle(client, engine):
    """A binary mask (COCO RLE) as mask_input refines like SAM's low-res logits input."""
    from hqseg_ray.masks import rle_encode
    from hqseg_ray.serve.inputs import mask_to_low_res_logits

    image = scene(80)
    image_id = upload(client, image)
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[20:70, 30:110] = True
    r = client.post(f"/v1/images/{image_id}/segment",
                    json={"prompts": [{"points": [[60, 40]], "labels": [1], "mask_input": rle_encode(mask)}]})
    assert r.status_code == 200, r.text
    emb = engine.encode(image[None])
    lr = mask_to_low_res_logits(mask, emb.input_sizes[0], engine.image_size, engine.low_res_size)
    ref, _, _ = engine.decode(emb, [Prompt(points=[[60, 40]], labels=[1], mask_input=lr)])
    np.testing.assert_array_equal(rle_decode(r.json()["masks"][0]), ref[0])


def test_request_counter_sees_errors(client):
    """Bad requests are counted too, by route template and status (GET /v1/stats shows the ingress's)."""
    client.post("/v1/images/img_missing/segment", json={"prompts": [{"box": [0, 0, 5, 5]}]})
    counts = client.get("/v1/stats").json()["requests"]
    assert counts.get("POST /v1/images/{image_id}/segment 404", 0) >= 1, counts
