"""Issue 20 against the running server on 127.0.0.1: the exploits of the issue, a fuzz of
malformed requests (no 5xx, healthy after), and a second application with API keys whose engine
is killed (``/healthz`` answers 503)."""

from __future__ import annotations

import base64
import json
import os
import random
import time

import numpy as np
import pytest

from tests.serve.conftest import png_bytes, scene

pytestmark = pytest.mark.e2e


def test_double_encoded_traversal_is_not_read(client, allowed_dir):
    private = allowed_dir.parent / "private"
    private.mkdir(exist_ok=True)
    (private / "x.png").write_bytes(png_bytes(scene(2)))
    r = client.post("/v1/images", json={"uri": f"file://{allowed_dir}/%252e%252e/private/x.png"})
    assert r.status_code == 404, r.text


def test_playlist_upload_reads_no_local_file(client, tmp_path):
    from hqseg_ray.synth.dataset import write_mp4
    from hqseg_ray.synth.generate import generate_video

    secret = tmp_path / "secret.mp4"
    write_mp4(generate_video(5, frames=6, size=(64, 96), n_objects=(1, 1), pan=False).frames, secret)
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1,\n{secret}\n#EXT-X-ENDLIST\n".encode()
    r = client.post("/v1/videos", files={"video": ("clip.m3u8", playlist, "application/vnd.apple.mpegurl")})
    assert r.status_code == 400 and "not a supported video container" in r.json()["detail"], r.text


def test_prompt_routes_have_a_small_body_cap(client):
    from tests.serve.conftest import SERVE_SETTINGS

    cap = SERVE_SETTINGS["max_json_bytes"]
    n = cap // 8 + 10
    body = json.dumps({"prompts": [{"points": [[1, 1]] * n, "labels": [1] * n}]}).encode()
    assert len(body) > cap
    r = client.post("/v1/images/img_x/segment", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_json_bytes" in r.json()["detail"], r.text
    r = client.post("/v1/videos/vid_x/prompts", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_cors_is_off_by_default(client):
    r = client.get("/v1/stats", headers={"origin": "https://evil.example.com"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = client.options("/v1/images", headers={"origin": "https://evil.example.com",
                                              "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in r.headers


# -- fuzz -----------------------------------------------------------------------------------------

def _garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 400)))
    if kind == 1:
        return b"{" * rng.randrange(1, 3000)
    if kind == 2:
        return json.dumps(rng.choice([[], {}, None, 1e308, "x" * 100, [[[[]]]], {"prompts": None}])).encode()
    if kind == 3:
        return b"\n" * rng.randrange(1, 50_000)
    if kind == 4:
        return b"\xff\xd8\xff" + os.urandom(rng.randrange(10, 2000))  # a JPEG that is not one
    if kind == 5:
        return b"\x00\x00\x00\x18ftypmp42" + os.urandom(rng.randrange(10, 5000))  # an MP4 that is not one
    if kind == 6:
        return b"#EXTM3U\n#EXTINF:1,\n/etc/passwd\n"
    return b'{"prompts": [' + b'{"box": [1e999, -1, "a", null]},' * rng.randrange(1, 50) + b"]}"


def _bad_prompt(rng: random.Random):
    return rng.choice([
        {"box": [rng.uniform(-1e9, 1e9) for _ in range(rng.randrange(0, 6))]},
        {"points": [[rng.uniform(-5, 5)] * rng.randrange(0, 4)], "labels": [rng.randrange(-3, 3)]},
        {"points": [[1, 2]], "labels": [1, 1, 1]},
        {"mask_input": {"size": [rng.randrange(-5, 5), 3], "counts": "".join(rng.choice("!~%0aZ") for _ in range(30))}},
        {"mask_input": {"size": [120, 160], "counts": [rng.randrange(-9, 99) for _ in range(20)]}},
        {"mask_input_id": "m_" + "0" * rng.randrange(0, 40)},
        {"object_id": -rng.randrange(1, 10 ** 12), "frame": rng.randrange(-10 ** 12, 10 ** 12), "box": [0, 0, 1, 1]},
        {"frame": 0, "points": "nope"},
        {"box": None, "points": None},
        {},
    ])


def _requests(rng: random.Random, image_id: str, session_id: str, allowed_dir):
    uris = ["file:///etc/passwd", f"file://{allowed_dir}/%252e%252e/x", f"file://{allowed_dir}/../x", "s3://b/k?x=1",
            "http://127.0.0.1:1/x", "http://[::1]/x", "gopher://x", "file://host/etc", "", "a" * 3000,
            f"file://{allowed_dir}/\x00.png", "http://user@169.254.169.254/", "https://0177.0.0.1/"]
    ctypes = ["application/json", "multipart/form-data", "multipart/form-data; boundary=zz", "image/png",
              "video/mp4", "text/plain", "application/octet-stream", "", "application/json; charset=utf-9"]
    while True:
        route = rng.randrange(12)
        if route == 0:
            yield "POST", "/v1/images", _garbage(rng), rng.choice(ctypes)
        elif route == 1:
            yield "POST", "/v1/images", json.dumps({"uri": rng.choice(uris)}).encode(), "application/json"
        elif route == 2:
            body = json.dumps({"prompts": [_bad_prompt(rng) for _ in range(rng.randrange(0, 4))]})
            yield "POST", f"/v1/images/{rng.choice([image_id, 'img_nope', '..', '%2e'])}/segment", body.encode(), "application/json"
        elif route == 3:
            yield "POST", f"/v1/images/{image_id}/segment", _garbage(rng), rng.choice(ctypes)
        elif route == 4:
            body = {"prompts": [_bad_prompt(rng)], rng.choice(["image", "uri"]): rng.choice(
                ["###", base64.b64encode(_garbage(rng)).decode(), rng.choice(uris)])}
            yield "POST", "/v1/segment", json.dumps(body).encode(), "application/json"
        elif route == 5:
            yield "POST", "/v1/videos", _garbage(rng), rng.choice(ctypes)
        elif route == 6:
            data = _garbage(rng)
            body = (b"--zz\r\nContent-Disposition: form-data; name=\"" + rng.choice([b"video", b"uri", b"x"])
                    + b"\"; filename=\"a." + rng.choice([b"m3u8", b"mp4", b"png", b"txt"]) + b"\"\r\n\r\n" + data
                    + rng.choice([b"\r\n--zz--\r\n", b"", b"\r\n--zz"]))
            yield "POST", rng.choice(["/v1/videos", "/v1/images"]), body, "multipart/form-data; boundary=zz"
        elif route == 7:
            body = json.dumps({"prompts": [_bad_prompt(rng) for _ in range(rng.randrange(0, 4))]})
            yield "POST", f"/v1/videos/{rng.choice([session_id, 'vid_nope'])}/prompts", body.encode(), "application/json"
        elif route == 8:
            yield "GET", f"/v1/videos/{session_id}/frames/{rng.randrange(-10 ** 6, 10 ** 6)}/masks", b"", ""
        elif route == 9:
            yield "GET", f"/v1/videos/{rng.choice(['vid_nope', session_id + 'x'])}", b"", ""
        elif route == 10:
            yield rng.choice(["DELETE", "PUT", "PATCH"]), rng.choice(["/v1/images/img_nope", "/v1/videos/x", "/v1/segment"]), b"", ""
        else:
            yield "POST", f"/v1/videos/{rng.choice(['vid_nope', session_id])}/{rng.choice(['propagate', 'prompts'])}", _garbage(rng), rng.choice(ctypes)


def test_fuzz_malformed_requests_never_5xx(client, allowed_dir, tmp_path):
    from hqseg_ray.synth.dataset import write_mp4
    from hqseg_ray.synth.generate import generate_video

    image_id = client.post("/v1/images", files={"image": ("a.png", png_bytes(scene(5)), "image/png")}).json()["image_id"]
    clip = tmp_path / "f.mp4"
    write_mp4(generate_video(6, frames=6, size=(64, 96), n_objects=(1, 1), pan=False).frames, clip)
    session_id = client.post("/v1/videos", content=clip.read_bytes(), headers={"content-type": "video/mp4"}).json()["session_id"]
    rng = random.Random(20)
    statuses: dict[int, int] = {}
    fivexx = []
    try:
        gen = _requests(rng, image_id, session_id, allowed_dir)
        for i in range(520):
            method, path, body, ctype = next(gen)
            headers = {"content-type": ctype} if ctype else {}
            r = client.request(method, path, content=body, headers=headers)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code >= 500:
                fivexx.append((method, path, ctype, body[:200], r.status_code, r.text[:300]))
        assert sum(statuses.values()) >= 500
        assert not fivexx, fivexx[:5]
        assert client.get("/healthz").status_code == 200
        ok = client.post(f"/v1/images/{image_id}/segment", json={"prompts": [{"box": [10, 10, 60, 60]}]})
        assert ok.status_code == 200, ok.text
    finally:
        client.delete(f"/v1/videos/{session_id}")
        client.delete(f"/v1/images/{image_id}")


# -- a second application: API keys, and an engine that dies ---------------------------------------

@pytest.fixture(scope="module")
def keyed_app(server, model_config, tmp_path_factory):
    """The same application under /keyed with API keys from a file (its own engine replica)."""
    from ray import serve

    from hqseg_ray.serve.app import build_app
    from tests.serve.conftest import SERVE_SETTINGS

    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text("# test key\nsecret-key-1\n")
    settings = {**SERVE_SETTINGS, "api_keys_file": str(keys), "health_probe_timeout_s": 2.0}
    serve.run(build_app({"model": model_config, "serve": settings}), name="hqseg-keyed", route_prefix="/keyed")
    try:
        yield server + "/keyed"
    finally:
        serve.delete("hqseg-keyed")


def test_api_key_auth_on_a_running_app(keyed_app):
    import httpx

    with httpx.Client(base_url=keyed_app, timeout=60) as c:
        assert c.get("/healthz").status_code == 200  # no key needed to probe health
        assert c.get("/v1/stats").status_code == 401
        # the review page's shell and assets load without a key (a browser navigating sends none);
        # its data routes do not
        assert c.get("/ui/").status_code == 200
        assert c.get("/ui/static/app.js").status_code == 200
        assert c.get("/ui/api/config").status_code == 401
        assert c.get("/ui/static/../api/config").status_code in (401, 404)
        assert c.post("/v1/images", files={"image": ("a.png", png_bytes(scene(1)), "image/png")}).status_code == 401
        assert c.get("/v1/stats", headers={"authorization": "Bearer wrong"}).status_code == 401
        r = c.get("/v1/stats", headers={"authorization": "Bearer secret-key-1"})
        assert r.status_code == 200, r.text
        r = c.post("/v1/images", files={"image": ("a.png", png_bytes(scene(1)), "image/png")},
                   headers={"x-api-key": "secret-key-1"})
        assert r.status_code == 200, r.text
    # the load test sends the key too
    import asyncio

    from hqseg_ray.serve.loadtest import run_load

    report = asyncio.run(run_load(keyed_app, clients=2, seconds=1, images=1, size=(64, 96), api_key="secret-key-1"))
    assert report["requests"] > 0 and report["5xx"] == 0 and not report.get("statuses", {}).get(401), report


def test_healthz_is_503_when_the_engine_is_dead(keyed_app):
    import httpx
    import ray

    actors = [a for a in ray.util.list_named_actors(all_namespaces=True)
              if "hqseg-keyed" in a["name"] and "SegEngineDeployment" in a["name"]]
    assert actors, ray.util.list_named_actors(all_namespaces=True)
    with httpx.Client(base_url=keyed_app, timeout=60) as c:
        assert c.get("/healthz").status_code == 200
        for a in actors:
            ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=True)
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and 503 not in seen:
            seen.append(c.get("/healthz").status_code)
        assert 503 in seen, seen
        # Serve replaces the replica; health comes back
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and c.get("/healthz").status_code != 200:
            time.sleep(1)
        assert c.get("/healthz").status_code == 200
