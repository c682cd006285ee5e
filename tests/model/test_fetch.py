"""The checkpoint fetcher against a real HTTP server on 127.0.0.1 that the tests start:
one download per node under concurrency, retry after a 429 (Retry-After honoured), resume after a
cut connection (HTTP Range), auth headers that do not leak across redirects, published sha256."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hqseg_ray.model import fetch
from hqseg_ray.model.fetch import FetchError, RetryPolicy, download, parse_retry_after

BODY = os.urandom(300_000)
SHA = hashlib.sha256(BODY).hexdigest()
FAST = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=5.0, timeout_s=10.0)
ROOT = Path(__file__).resolve().parents[2]


class _Server(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    lock = threading.Lock()
    log: list = []            # (path, Range header, Authorization header)
    counters: dict = {}
    slow_s = 0.0

    def log_message(self, *args):
        pass

    def _count(self, key: str) -> int:
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + 1
            return self.counters[key]

    def _send_body(self, extra: dict | None = None, cut_at: int | None = None):
        rng = self.headers.get("Range")
        start = 0
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(BODY):
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(BODY) - start))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        data = BODY[start:cut_at] if cut_at is not None else BODY[start:]
        for i in range(0, len(data), 30_000):
            self.wfile.write(data[i:i + 30_000])
            self.wfile.flush()
            if self.slow_s:
                time.sleep(self.slow_s)
        if cut_at is not None:
            self.close_connection = True

    def do_GET(self):  # noqa: N802
        path = self.path
        with self.lock:
            self.log.append((path, self.headers.get("Range"), self.headers.get("Authorization")))
        if path == "/file":
            self._count("file-full" if not self.headers.get("Range") else "file-range")
            self._send_body()
        elif path == "/r429":
            if self._count("r429") == 1:
                self.send_response(429)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send_body()
        elif path == "/e404":
            self.send_error(404, "not here")
        elif path == "/cut":
            first = self._count("cut") == 1
            self._send_body(cut_at=len(BODY) // 3 if first else None)
        elif path == "/auth":
            if self.headers.get("Authorization") != "Bearer s3cret":
                self.send_error(401, "token needed")
                return
            self._send_body()
        elif path == "/redirect":
            # like huggingface.co -> a pre-signed CDN URL on another host
            port = self.server.server_address[1]
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{port}/file")
            self.send_header("X-Linked-Etag", f'"{SHA}"')
            self.send_header("X-Repo-Commit", "0123abcd")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/published-wrong":
            self._send_body(extra={"X-Linked-Etag": '"' + "0" * 64 + '"'})
        else:
            self.send_error(404)


@pytest.fixture
def server():
    _Server.log, _Server.counters, _Server.slow_s = [], {}, 0.0
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _no_tokens(monkeypatch):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HQSEG_CHECKPOINT_AUTH", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def test_plain_download_is_verified(server, tmp_path):
    dest = download(f"{server}/file", tmp_path / "f.pth", len(BODY), SHA, FAST)
    assert dest.read_bytes() == BODY
    assert not (tmp_path / "f.pth.part").exists()


def test_concurrent_processes_download_once(server, tmp_path):
    """Four processes (as four actors on one node) ask for the same file: one GET, four good files."""
    _Server.slow_s = 0.1  # ~1 s transfer, so that the others arrive while it runs
    dest = tmp_path / "cache" / "f.pth"
    code = ("import sys; from pathlib import Path; from hqseg_ray.model.fetch import download;"
            f"p = download({server + '/file'!r}, Path({str(dest)!r}), {len(BODY)}, {SHA!r});"
            "print(p.stat().st_size)")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert all(o[0].strip() == str(len(BODY)) for o in outs)
    assert _Server.counters.get("file-full") == 1, _Server.counters
    assert dest.read_bytes() == BODY


def test_retry_after_429_is_honoured(server, tmp_path):
    t0 = time.monotonic()
    dest = download(f"{server}/r429", tmp_path / "f.pth", len(BODY), SHA, FAST)
    assert dest.read_bytes() == BODY
    assert _Server.counters["r429"] == 2
    assert time.monotonic() - t0 >= 0.9  # waited the server's Retry-After: 1, not the 0.01 s backoff


def test_resume_after_a_cut_uses_range(server, tmp_path):
    dest = download(f"{server}/cut", tmp_path / "f.pth", len(BODY), SHA, FAST)
    assert dest.read_bytes() == BODY
    ranges = [r for p, r, _ in _Server.log if p == "/cut"]
    assert ranges == [None, f"bytes={len(BODY) // 3}-"]  # the second request continued the file


def test_partial_file_from_an_earlier_process_is_resumed(server, tmp_path):
    (tmp_path / "f.pth.part").write_bytes(BODY[:100_000])
    download(f"{server}/file", tmp_path / "f.pth", len(BODY), SHA, FAST)
    assert (tmp_path / "f.pth").read_bytes() == BODY
    assert _Server.counters == {"file-range": 1}


def test_not_found_fails_at_once(server, tmp_path):
    with pytest.raises(FetchError, match="HTTP 404"):
        download(f"{server}/e404", tmp_path / "f.pth", None, None, FAST)
    assert len([p for p, _, _ in _Server.log if p == "/e404"]) == 1
    assert not list(tmp_path.glob("f.pth*[!k]"))


def test_auth_header_and_hint(server, tmp_path, monkeypatch):
    with pytest.raises(FetchError, match="HTTP 401.*HF_TOKEN"):
        download(f"{server}/auth", tmp_path / "f.pth", None, None, FAST)
    monkeypatch.setenv("HQSEG_CHECKPOINT_AUTH", "Bearer s3cret")
    assert download(f"{server}/auth", tmp_path / "f.pth", None, SHA, FAST).read_bytes() == BODY


def test_hf_token_goes_to_the_hub_only_and_not_across_redirects(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abc")
    monkeypatch.setenv("HF_ENDPOINT", server)
    assert fetch.auth_headers(f"{server}/x") == {"Authorization": "Bearer hf_abc"}
    assert fetch.auth_headers("https://example.com/x") == {}
    dest = download(f"{server}/redirect", tmp_path / "f.pth", len(BODY), None, FAST)
    assert dest.read_bytes() == BODY
    hops = [(p, a) for p, _, a in _Server.log]
    assert hops == [("/redirect", "Bearer hf_abc"), ("/file", None)]


def test_published_sha256_is_checked(server, tmp_path):
    with pytest.raises(FetchError, match="does not match"):
        download(f"{server}/published-wrong", tmp_path / "f.pth", None, None, FAST)
    assert not (tmp_path / "f.pth").exists() and not (tmp_path / "f.pth.part").exists()


def test_gives_up_after_the_attempts(tmp_path):
    policy = RetryPolicy(attempts=2, base_delay_s=0.01, timeout_s=2.0)
    with pytest.raises(FetchError, match="after 2 attempts: cannot connect"):
        download("http://127.0.0.1:9/nothing", tmp_path / "f.pth", None, None, policy)


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert RetryPolicy(max_delay_s=30).delay(0, 3600) == 30  # a huge Retry-After is capped


def test_lock_held_too_long_is_a_clear_error(server, tmp_path):
    from filelock import FileLock

    dest = tmp_path / "f.pth"
    policy = RetryPolicy(attempts=1, lock_timeout_s=0.2)
    with FileLock(str(dest) + ".lock"):  # another process holds it (same effect in this process)
        import threading as _t

        errors = []
        t = _t.Thread(target=lambda: errors.append(_try(download, f"{server}/file", dest, policy)))
        t.start()
        t.join(10)
    assert errors and "another process has been fetching it" in errors[0]


def _try(fn, url, dest, policy):
    try:
        fn(url, dest, None, None, policy)
    except FetchError as exc:
        return str(exc)
    return "no error"
