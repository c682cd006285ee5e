"""Issue 20 findings that need no running server: video containers, session budgets and caps,
request parsing, authentication, CORS, body caps, errors, health, shipped configs."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading

import numpy as np
import pytest
from starlette.requests import Request  # module level: FastAPI resolves the test routes' annotations here

from hqseg_ray.config import ServeConfig
from hqseg_ray.serve.errors import Busy, ClientError, PayloadTooLarge
from tests.serve.conftest import png_bytes

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def write_clip(path, frames: int, size=(64, 96), seed: int = 5):
    from hqseg_ray.synth.dataset import write_mp4
    from hqseg_ray.synth.generate import generate_video

    write_mp4(generate_video(seed, frames=frames, size=size, n_objects=(1, 1), pan=False).frames, path)
    return path


@pytest.fixture
def decode_spy(monkeypatch):
    """Records every probe_video / read_frames call (the decoders sessions use)."""
    import hqseg_ray.video as video

    calls = []
    real_probe, real_read = video.probe_video, video.read_frames

    def probe(*a, **k):
        calls.append("probe_video")
        return real_probe(*a, **k)

    def read(*a, **k):
        calls.append("read_frames")
        return real_read(*a, **k)

    monkeypatch.setattr(video, "probe_video", probe)
    monkeypatch.setattr(video, "read_frames", read)
    return calls


def store(**settings):
    from hqseg_ray.serve.sessions import SessionStore

    return SessionStore(ServeConfig(**settings), image_size=64)


# -- video containers ------------------------------------------------------------------------

def test_playlist_and_concat_uploads_read_no_local_file(tmp_path):
    """An uploaded .m3u8 playlist or an ffconcat file (under any suffix) made FFmpeg read local
    files outside the allow-list."""
    secret = write_clip(tmp_path / "secret.mp4", 6)
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1,\n{secret}\n#EXT-X-ENDLIST\n".encode()
    rel = os.path.relpath(secret, tempfile.gettempdir())
    concat = f"ffconcat version 1.0\nfile {rel}\n".encode()
    s = store()
    for data, suffix in [(playlist, ".m3u8"), (concat, ".mp4"), (concat, ".txt")]:
        with pytest.raises(ClientError, match="not a supported video container"):
            asyncio.run(s.create(data, suffix))
    assert len(s.cache) == 0


def test_image_sent_as_video_is_refused_before_decoding(decode_spy):
    """A 420 KB PNG sent as a 'video' cost ~840 MB before its 413."""
    data = png_bytes(np.zeros((6000, 6000, 3), dtype=np.uint8))
    with pytest.raises(ClientError):
        asyncio.run(store().create(data))
    assert decode_spy == []


def test_frames_checked_from_header_before_decoding(tmp_path, decode_spy):
    """Frame size and count come from the container header, before any frame is decoded."""
    big = write_clip(tmp_path / "big.mp4", 4, size=(240, 320))
    with pytest.raises(PayloadTooLarge, match="max_image_pixels"):
        asyncio.run(store(max_image_pixels=50_000).create(big.read_bytes()))
    assert decode_spy == []


def test_session_budget_is_413_when_it_can_never_fit(tmp_path, decode_spy):
    """A session over serve.session_max_bytes was decoded in full, then answered 429."""
    clip = write_clip(tmp_path / "c.mp4", 20)  # 20 frames of 43x64x3 at model size 64: ~165 KB
    with pytest.raises(PayloadTooLarge, match="session_max_bytes"):
        asyncio.run(store(session_max_bytes=100_000).create(clip.read_bytes()))
    assert "read_frames" not in decode_spy


def test_session_budget_is_429_only_when_a_retry_can_succeed(tmp_path, decode_spy):
    small = write_clip(tmp_path / "s.mp4", 6).read_bytes()  # ~50 KB at model size
    big = write_clip(tmp_path / "b.mp4", 12).read_bytes()  # ~100 KB
    s = store(session_max_bytes=120_000)
    first = asyncio.run(s.create(small))
    decode_spy.clear()
    with pytest.raises(Busy, match="session_max_bytes"):
        asyncio.run(s.create(big))
    assert "read_frames" not in decode_spy
    s.delete(first.session_id)
    assert asyncio.run(s.create(big)).frames.shape[0] == 12


def test_concurrent_uploads_reserve_their_bytes(tmp_path, monkeypatch):
    """32 uploads at once each passed the budget check, then all decoded (the ingress OOM)."""
    import hqseg_ray.video as video

    clip = write_clip(tmp_path / "b.mp4", 12).read_bytes()  # ~100 KB at model size
    entered, release = threading.Event(), threading.Event()
    real_read = video.read_frames

    def slow_read(*a, **k):
        entered.set()
        release.wait(30)
        return real_read(*a, **k)

    monkeypatch.setattr(video, "read_frames", slow_read)
    s = store(session_max_bytes=150_000)

    async def main():
        first = asyncio.create_task(s.create(clip))
        while not entered.is_set():
            await asyncio.sleep(0.02)
        try:
            with pytest.raises(Busy):
                await asyncio.wait_for(s.create(clip), 20)
        finally:
            release.set()
        return await first

    assert asyncio.run(main()).frames.shape[0] == 12
    assert s.stats()["reserved_bytes"] == 0


# -- prompts per session ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def session(tmp_path_factory):
    clip = write_clip(tmp_path_factory.mktemp("clip") / "c.mp4", 6)
    s = store(max_points=4, max_prompts=8, max_session_prompts=10, max_session_objects=3)
    return s, asyncio.run(s.create(clip.read_bytes()))


def test_video_prompts_obey_max_points(session):
    from hqseg_ray.prompts import PromptSpec

    s, sess = session
    p = PromptSpec(object_id=1, frame=0, points=[[1, 1]] * 5, labels=[1] * 5)
    with pytest.raises(ClientError, match="5 points; the limit is 4"):
        s.add_prompts(sess, [p])


def test_video_prompts_and_objects_are_capped_per_session(session):
    from hqseg_ray.prompts import PromptSpec

    s, sess = session
    sess.prompts = []
    with pytest.raises(ClientError, match="max_session_objects"):
        s.add_prompts(sess, [PromptSpec(object_id=i, frame=0, box=[0, 0, 5, 5]) for i in range(4)])
    for frame in range(5):  # 2 objects x 5 frames = 10 prompts, the cap
        s.add_prompts(sess, [PromptSpec(object_id=i, frame=frame, box=[0, 0, 5, 5]) for i in (1, 2)])
    assert len(sess.prompts) == 10
    s.add_prompts(sess, [PromptSpec(object_id=1, frame=0, box=[1, 1, 6, 6])])  # a replacement still fits
    with pytest.raises(ClientError, match="max_session_prompts"):
        s.add_prompts(sess, [PromptSpec(object_id=3, frame=0, box=[0, 0, 5, 5])])
    sess.prompts = []


def test_bad_video_prompts_are_client_errors(session):
    from hqseg_ray.prompts import PromptSpec

    s, sess = session
    with pytest.raises(ClientError, match="outside the video"):
        s.add_prompts(sess, [PromptSpec(object_id=1, frame=99, box=[0, 0, 5, 5])])


# -- request parsing ------------------------------------------------------------------------

def _request(body: bytes, ctype: str, path: str = "/v1/images"):
    from starlette.requests import Request

    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-type", ctype.encode())],
             "query_string": b""}
    return Request(scope, receive)


def test_multipart_is_parsed_off_the_event_loop(monkeypatch):
    """A 16 MB multipart body of newlines blocked the event loop ~20 s."""
    from hqseg_ray.serve import inputs
    from hqseg_ray.serve.schemas import ImageIn

    threads = []
    real = inputs.parse_multipart

    def spy(*a, **k):
        threads.append(threading.current_thread())
        return real(*a, **k)

    monkeypatch.setattr(inputs, "parse_multipart", spy)
    body = (b'--xx\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\nPNGDATA\r\n--xx--\r\n")
    up = asyncio.run(inputs.read_upload(_request(body, "multipart/form-data; boundary=xx"), "image", ImageIn))
    assert up.data == b"PNGDATA" and up.uri is None
    assert threads and threads[0] is not threading.main_thread()


def test_multipart_parser_is_linear():
    """16 MB of newlines: the stdlib email parser took ~20 s; a boundary scan takes milliseconds."""
    import time

    from hqseg_ray.serve.inputs import parse_multipart

    body = (b'--b\r\nContent-Disposition: form-data; name="video"; filename="a"\r\n\r\n' + b"\n" * (16 << 20)
            + b'\r\n--b\r\nContent-Disposition: form-data; name="uri"\r\n\r\nx\r\n--b--\r\n')
    t0 = time.perf_counter()
    fields = parse_multipart(body, "multipart/form-data; boundary=b")
    assert time.perf_counter() - t0 < 5  # generous on a shared machine; the old parser took > 20 s
    assert fields["video"] == ("a", b"\n" * (16 << 20)) and fields["uri"] == (None, b"x")
    for bad in [b"garbage", b"--b\r\nno headers end", b'--b\r\nContent-Disposition: form-data; name="a"\r\n\r\nx']:
        with pytest.raises(ClientError):
            parse_multipart(bad, "multipart/form-data; boundary=b")


def test_json_bodies_are_validated_off_the_event_loop():
    from pydantic import field_validator
    from fastapi.exceptions import RequestValidationError

    from hqseg_ray.serve import inputs
    from hqseg_ray.serve.schemas import SegmentRequest

    threads = []

    class Spy(SegmentRequest):
        @field_validator("prompts")
        @classmethod
        def _where(cls, v):
            threads.append(threading.current_thread())
            return v

    req = asyncio.run(inputs.read_json(_request(b'{"prompts": [{"box": [0, 0, 5, 5]}]}', "application/json"), Spy))
    assert req.prompts[0].box == [0, 0, 5, 5] and threads[0] is not threading.main_thread()
    with pytest.raises(RequestValidationError):
        asyncio.run(inputs.read_json(_request(b'{"prompts": "x"}', "application/json"), Spy))


def test_schema_caps_bound_prompt_lists():
    from pydantic import ValidationError

    from hqseg_ray.serve.schemas import MAX_POINTS_HARD, SegmentRequest

    with pytest.raises(ValidationError):
        SegmentRequest.model_validate({"prompts": [{"points": [[1, 1]] * (MAX_POINTS_HARD + 1)}]})


# -- authentication, CORS, body caps (the ASGI guard) -----------------------------------------

def _guard_client(settings, monkeypatch=None):
    import httpx
    from fastapi import FastAPI

    from hqseg_ray.serve.security import Guard

    inner = FastAPI()

    @inner.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @inner.post("/v1/images/{image_id}/segment")
    async def echo_segment(image_id: str, request: Request):
        return {"n": len(await request.body())}

    @inner.post("/v1/images")
    async def echo(request: Request):
        return {"n": len(await request.body())}

    @inner.get("/v1/stats")
    async def stats():
        return {}

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=Guard(inner, settings=settings)),
                             base_url="http://test")


def _run(coro):
    return asyncio.run(coro)


def test_api_keys_required_and_compared_in_constant_time(tmp_path, monkeypatch):
    import hqseg_ray.serve.security as security

    keys = tmp_path / "keys"
    keys.write_text("# team a\nkey-one\n\nkey-two  \n")
    settings = security.SecuritySettings.from_config(ServeConfig(api_keys_file=str(keys)), environ={})
    assert settings.api_keys == ("key-one", "key-two")
    compared = []
    real = security.hmac.compare_digest
    monkeypatch.setattr(security.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))

    async def go():
        async with _guard_client(settings) as c:
            assert (await c.get("/v1/stats")).status_code == 401
            r = await c.get("/v1/stats", headers={"authorization": "Bearer nope"})
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert (await c.get("/v1/stats", headers={"authorization": "Bearer key-two"})).status_code == 200
            assert (await c.get("/v1/stats", headers={"x-api-key": "key-one"})).status_code == 200
            assert (await c.get("/healthz")).status_code == 200  # load balancers probe without a key

    _run(go())
    assert len(compared) >= 4


def test_api_keys_from_env_and_fail_closed():
    from hqseg_ray.serve.security import SecuritySettings

    s = SecuritySettings.from_config(ServeConfig(api_keys_env="K"), environ={"K": "a, b\nc"})
    assert s.api_keys == ("a", "b", "c")
    with pytest.raises(RuntimeError, match="no API key"):
        SecuritySettings.from_config(ServeConfig(api_keys_env="K"), environ={})
    assert SecuritySettings.from_config(ServeConfig(), environ={}).api_keys == ()


def test_non_loopback_host_requires_keys_or_explicit_opt_out():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="allow_unauthenticated"):
        ServeConfig(host="0.0.0.0")
    ServeConfig(host="0.0.0.0", api_keys_env="HQSEG_API_KEYS")
    ServeConfig(host="0.0.0.0", allow_unauthenticated=True)
    ServeConfig(host="127.0.0.1")
    ServeConfig(host="::1")


def test_cors_off_by_default_and_configurable():
    from hqseg_ray.serve.security import SecuritySettings

    async def go(settings, expect):
        async with _guard_client(settings) as c:
            r = await c.get("/v1/stats", headers={"origin": "https://app.example.com"})
            assert r.headers.get("access-control-allow-origin") == expect
            pre = await c.options("/v1/images", headers={"origin": "https://app.example.com",
                                                         "access-control-request-method": "POST"})
            assert pre.headers.get("access-control-allow-origin") == expect

    _run(go(SecuritySettings.from_config(ServeConfig(), environ={}), None))
    on = SecuritySettings.from_config(ServeConfig(cors_allow_origins=["https://app.example.com"]), environ={})
    _run(go(on, "https://app.example.com"))


def test_body_caps_per_route():
    """A 21 MB points list took 8.5 s and 0.8 GB before max_points rejected it: prompt-only
    routes now have their own small cap."""
    from hqseg_ray.serve.security import SecuritySettings

    s = SecuritySettings.from_config(ServeConfig(max_json_bytes=1000, max_upload_bytes=10_000), environ={})

    async def go():
        async with _guard_client(s) as c:
            assert (await c.post("/v1/images/img_1/segment", content=b"x" * 1001)).status_code == 413
            assert (await c.post("/v1/images/img_1/segment", content=b"x" * 1000)).status_code == 200
            assert (await c.post("/v1/images", content=b"x" * 5000)).status_code == 200
            assert (await c.post("/v1/images", content=b"x" * 10_001)).status_code == 413

            async def chunks():  # no Content-Length: the bytes received count
                for _ in range(3):
                    yield b"x" * 600

            assert (await c.post("/v1/images/img_1/segment", content=chunks())).status_code == 413

    _run(go())


# -- errors and health --------------------------------------------------------------------------

def test_internal_errors_are_500_only_input_errors_4xx():
    """Internal ValueErrors became 400."""
    from hqseg_ray.serve.errors import NotFound, status_of

    assert status_of(ValueError("a bug")) == 500
    assert status_of(KeyError("a bug")) == 500
    assert status_of(ClientError("bad")) == 400 and status_of(NotFound("x")) == 404

    class Wrapped(Exception):  # how Ray delivers an exception raised in another replica
        cause = PayloadTooLarge("big")

    assert status_of(Wrapped()) == 413


def test_health_probe_calls_the_engine_every_time():
    """/healthz stayed 200 after the engine died (the answer of the first call was cached)."""
    from hqseg_ray.serve.api import probe_engine

    class Method:
        def __init__(self):
            self.mode = "ok"

        def remote(self):
            async def answer():
                if self.mode == "dead":
                    raise RuntimeError("ActorDiedError: the replica died")
                if self.mode == "hang":
                    await asyncio.sleep(30)
                return {"label": "toy"}
            return answer()

    class Engine:
        info = Method()

    eng = Engine()
    assert _run(probe_engine(eng, 1.0)) == (200, {"status": "ok", "model": "toy"})
    eng.info.mode = "dead"
    status, body = _run(probe_engine(eng, 1.0))
    assert status == 503 and "died" in body["detail"]
    eng.info.mode = "hang"
    assert _run(probe_engine(eng, 0.2))[0] == 503


# -- shipped configs ----------------------------------------------------------------------------

def test_shipped_configs_bound_time_and_queues():
    from hqseg_ray.config import load_yaml
    from hqseg_ray.serve.app import build_app

    data = load_yaml(os.path.join(ROOT, "configs", "serve.yaml"))
    assert data["http_options"]["request_timeout_s"] > 0
    app_cfg = data["applications"][0]
    deps = {d["name"]: d for d in app_cfg["deployments"]}
    assert deps["SegEngineDeployment"]["max_queued_requests"] > 0 and deps["HQSegAPI"]["max_queued_requests"] > 0
    serve_args = app_cfg["args"]["serve"]
    # the app checks authentication against the address it is bound to
    assert serve_args["host"] == data["http_options"]["host"] == "0.0.0.0"
    assert serve_args["api_keys_env"] and not serve_args.get("allow_unauthenticated")
    api = build_app(app_cfg["args"], app_cfg["deployments"])._bound_deployment
    assert api._deployment_config.max_queued_requests > 0
    assert api.init_args[0]._bound_deployment._deployment_config.max_queued_requests > 0

    demo = load_yaml(os.path.join(ROOT, "configs", "serve-demo.yaml"))["serve"]
    assert demo["request_timeout_s"] > 0 and demo["max_queued_requests"] > 0 and demo["api_max_queued_requests"] > 0
    api = build_app(load_yaml(os.path.join(ROOT, "configs", "serve-demo.yaml")))._bound_deployment
    assert api._deployment_config.max_queued_requests == demo["api_max_queued_requests"]


def test_plan_serve_passes_the_request_timeout():
    from hqseg_ray.config import load_yaml
    from hqseg_ray.serve.command import http_options

    assert http_options(load_yaml(os.path.join(ROOT, "configs", "serve-demo.yaml")))["request_timeout_s"] > 0
    assert http_options(load_yaml(os.path.join(ROOT, "configs", "serve.yaml")))["request_timeout_s"] > 0
    with pytest.raises(ValueError, match="host"):
        http_options({"http_options": {"host": "0.0.0.0"}, "applications": [
            {"name": "a", "import_path": "hqseg_ray.serve.app:build_app", "args": {"serve": {"host": "127.0.0.1"}}}]})


def test_oversized_json_lists_are_refused_before_parsing():
    """A 21 MB points list took 8.5 s and 0.8 GB before max_points rejected it (the one-shot route
    takes upload-sized bodies): the element count is bounded before the JSON is parsed."""
    from pydantic import field_validator

    from hqseg_ray.serve import inputs
    from hqseg_ray.serve.schemas import OneShotRequest

    validated = []

    class Spy(OneShotRequest):
        @field_validator("prompts")
        @classmethod
        def _seen(cls, v):
            validated.append(1)
            return v

    cfg = ServeConfig(max_prompts=8, max_points=16)
    n = 250_000
    body = ('{"image": "data:image/png;base64,AAAA", "prompts": [{"points": ' + "[[1, 1]," * n + "[1, 1]]}]}").encode()
    with pytest.raises(PayloadTooLarge, match="max_points"):
        asyncio.run(inputs.read_json(_request(body, "application/json", "/v1/segment"), Spy,
                                     inputs.json_element_budget(cfg)))
    assert validated == []
    ok = b'{"image": "data:image/png;base64,AAAA", "prompts": [{"points": [[1, 1], [2, 2]], "labels": [1, 0]}]}'
    assert asyncio.run(inputs.read_json(_request(ok, "application/json"), Spy, inputs.json_element_budget(cfg)))


def test_only_the_review_pages_shell_and_assets_are_open():
    from hqseg_ray.serve.security import _open

    assert _open("/healthz") and _open("/ui/") and _open("/ui") and _open("/ui/static/app.js")
    for path in ("/ui/api/config", "/ui/static/../api/config", "/ui/static/a/b", "/ui/static/",
                 "/ui/static/..", "/v1/stats", "/docs", "/openapi.json"):
        assert not _open(path), path
