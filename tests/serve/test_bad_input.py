"""Every bad input gets a 4xx with a message, never a 5xx."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.serve.conftest import png_bytes, scene

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def image_id(server):
    import httpx

    r = httpx.post(f"{server}/v1/images", files={"image": ("a.png", png_bytes(scene(3)), "image/png")}, timeout=60)
    return r.json()["image_id"]


def check(r, status: int, *words: str):
    assert r.status_code == status, (r.status_code, r.text)
    detail = str(r.json()["detail"])
    for w in words:
        assert w in detail, detail


def bomb_png() -> bytes:
    """A few KiB of PNG that decodes to 4 million pixels (the test limit is 1 million)."""
    return png_bytes(np.zeros((2000, 2000, 3), dtype=np.uint8))


def test_malformed_json(client, image_id):
    r = client.post(f"/v1/images/{image_id}/segment", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "json" in r.text.lower()
    check(client.post("/v1/images", content=b"{oops", headers={"content-type": "application/json"}), 400, "invalid JSON")


def test_unknown_ids(client):
    check(client.post("/v1/images/img_nope/segment", json={"prompts": [{"box": [0, 0, 5, 5]}]}), 404, "img_nope")
    check(client.delete("/v1/images/img_nope"), 404, "img_nope")


@pytest.mark.parametrize("prompt, words", [
    ({"box": [0, 0, 500, 50]}, ["outside the 160x120 frame"]),
    ({"points": [[10, 999]], "labels": [1]}, ["outside"]),
    ({"box": [50, 20, 10, 80]}, ["x2 < x1"]),
    ({"points": [[10, 10]]}, ["without labels"]),
    ({"points": [[10, 10]], "labels": [7]}, ["labels must be 0 or 1"]),
    ({}, ["needs at least one of"]),
    ({"mask_input": {"size": [120, 160], "counts": "%%%garbage"}}, ["not a valid COCO RLE"]),
    ({"mask_input": {"size": [10, 10], "counts": "PP1"}}, ["not the image's"]),
    ({"box": [0, 0, 5, 5], "mask_input_id": "m_unknown"}, ["unknown for this image"]),
])
def test_bad_prompts(client, image_id, prompt, words):
    check(client.post(f"/v1/images/{image_id}/segment", json={"prompts": [prompt]}), 400, *words)


def test_prompt_schema_errors(client, image_id):
    r = client.post(f"/v1/images/{image_id}/segment", json={"prompts": [{"box": "big"}]})
    assert r.status_code == 422
    assert client.post(f"/v1/images/{image_id}/segment", json={"prompts": []}).status_code == 422
    assert client.post(f"/v1/images/{image_id}/segment", json={"prompts": [{"boxx": [1, 2, 3, 4]}]}).status_code == 422


def test_too_many_prompts_and_points(client, image_id):
    check(client.post(f"/v1/images/{image_id}/segment", json={"prompts": [{"box": [0, 0, 5, 5]}] * 9}),
          400, "9 prompts", "limit is 8")
    pts = {"points": [[1, 1]] * 17, "labels": [1] * 17}
    check(client.post(f"/v1/images/{image_id}/segment", json={"prompts": [pts]}), 400, "17 points")


def test_not_an_image(client):
    check(client.post("/v1/images", files={"image": ("a.png", b"hello, not a picture", "image/png")}), 400, "not an image")
    check(client.post("/v1/images", content=png_bytes(scene(4))[:200], headers={"content-type": "image/png"}),
          400, "corrupt or truncated")
    check(client.post("/v1/images", json={"image": "###"}), 400, "base64")
    check(client.post("/v1/images", content=b"x", headers={"content-type": "text/plain"}), 400, "Content-Type")
    check(client.post("/v1/segment", json={"prompts": [{"box": [0, 0, 1, 1]}]}), 400, "exactly one of")


def test_decompression_bomb(client):
    data = bomb_png()
    assert len(data) < 100_000
    check(client.post("/v1/images", content=data, headers={"content-type": "image/png"}), 413, "2000x2000", "max_image_pixels")
    check(client.post("/v1/segment", json={"image": base64.b64encode(data).decode(), "prompts": [{"box": [0, 0, 5, 5]}]}),
          413, "max_image_pixels")


def test_oversized_upload(client):
    big = b"\0" * 2_100_000  # the test limit is 2 MB
    check(client.post("/v1/images", content=big, headers={"content-type": "image/png"}), 413, "max_upload_bytes")

    def chunks():  # no Content-Length: the streamed size is what counts
        for _ in range(30):
            yield b"\0" * 100_000

    check(client.post("/v1/images", content=chunks(), headers={"content-type": "image/png"}), 413, "max_upload_bytes")


@pytest.mark.parametrize("uri, words", [
    ("file:///etc/passwd", ["outside the allowed prefixes"]),
    ("ALLOWED/../../etc/passwd", ["'..'"]),
    ("ALLOWED/%2e%2e/secret.png", ["'..'"]),
    ("http://169.254.169.254/latest/meta-data/", ["link-local or metadata"]),
    ("http://[fd00:ec2::254]/latest/", ["link-local or metadata"]),
    ("http://metadata.google.internal/computeMetadata/v1/", ["metadata endpoint"]),
    ("ftp://example.com/a.png", ["unsupported scheme"]),
])
def test_refused_uris(client, allowed_dir, uri, words):
    uri = uri.replace("ALLOWED", f"file://{allowed_dir}")
    check(client.post("/v1/images", json={"uri": uri}), 403, *words)


def test_symlink_out_of_prefix_refused(client, allowed_dir):
    link = allowed_dir / "escape.png"
    if not link.exists():
        link.symlink_to("/etc/hostname")
    check(client.post("/v1/images", json={"uri": f"file://{link}"}), 403, "outside the allowed prefixes")


def test_missing_allowed_file(client, allowed_dir):
    r = client.post("/v1/images", json={"uri": f"file://{allowed_dir}/missing.png"})
    assert r.status_code == 404, r.text
