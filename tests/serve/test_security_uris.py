"""Issue 20, URI findings: what a client may make the server read (no server needed).

Every test here failed on the code before the fix (see the note of branch i20-security).
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from hqseg_ray.config import ServeConfig
from hqseg_ray.serve.errors import NotFound, UpstreamError
from hqseg_ray.serve.uris import URIRefused, check_uri, read_uri
from tests.serve.conftest import free_port, png_bytes, scene

PUBLIC_IP = "93.184.216.34"


@pytest.fixture
def public_dns(monkeypatch):
    """Every name resolves to a public address (no DNS here); IP literals resolve as usual.
    Counts the lookups of names."""
    real = socket.getaddrinfo
    calls: list[str] = []

    def fake(host, *args, **kwargs):
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, str(host))
            return real(host, *args, **kwargs)
        except OSError:
            pass
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_IP, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return calls


def test_double_encoded_traversal_reads_nothing_outside(tmp_path):
    """`file:///allowed/%252e%252e/private/x.png` used to pass the check and be read (the path was
    %-decoded a second time before opening)."""
    (tmp_path / "allowed").mkdir()
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "x.png").write_bytes(png_bytes(scene(1)))
    cfg = ServeConfig(allowed_uri_prefixes=[f"file://{tmp_path}/allowed/"])
    with pytest.raises(NotFound):  # a folder literally named '%2e%2e': it does not exist
        read_uri(f"file://{tmp_path}/allowed/%252e%252e/private/x.png", cfg)
    with pytest.raises(URIRefused, match="'..'"):
        read_uri(f"file://{tmp_path}/allowed/%2e%2e/private/x.png", cfg)
    (tmp_path / "allowed" / "ok.png").write_bytes(b"fine")
    assert read_uri(f"file://{tmp_path}/allowed/ok.png", cfg) == b"fine"
    checked = check_uri(f"file://{tmp_path}/allowed/%6Fk.png", cfg.allowed_uri_prefixes)  # decoded once: ok.png
    assert checked.path == f"{tmp_path}/allowed/ok.png"


def test_object_store_uri_options_are_refused_and_never_contacted(tmp_path):
    """`s3://bucket/key?endpoint_override=127.0.0.1:PORT&scheme=http` used to pass the check and
    make the server send its credentials to that host (FileSystem.from_uri takes options from
    the URI)."""
    hits: list[bytes] = []
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            hits.append(conn.recv(4096))
            conn.close()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    port = srv.getsockname()[1]
    cfg = ServeConfig(allowed_uri_prefixes=["s3://bucket/clips/"], uri_connect_timeout_s=1, uri_read_timeout_s=1)
    try:
        for uri in [f"s3://bucket/clips/a.mp4?endpoint_override=127.0.0.1:{port}&scheme=http",
                    "s3://bucket/clips/a.mp4#frag", "s3://user:pw@bucket/clips/a.mp4",
                    "s3://bucket:9000/clips/a.mp4", "s3://bucket/clips/%2e%2e/secret.mp4",
                    "gs://bucket/clips/a.mp4"]:
            with pytest.raises(URIRefused):
                check_uri(uri, cfg.allowed_uri_prefixes)
            with pytest.raises(URIRefused):
                read_uri(uri, cfg)
        time.sleep(0.3)
        assert hits == []
    finally:
        stop.set()
        t.join(2)
        srv.close()


def test_prefixes_compare_structurally(public_dns):
    allowed = ["https://media.example.com/clips", "s3://bucket/clips"]
    assert check_uri("https://media.example.com/clips/a.png", allowed).host == "media.example.com"
    assert check_uri("s3://bucket/clips/sub/a.mp4", allowed).path == "bucket/clips/sub/a.mp4"
    for bad in ["https://media.example.com/clips-private/a.png",      # not a path-segment prefix
                "https://media.example.com.evil.net/clips/a.png",     # another host
                "https://media.example.com@10.0.0.1:8265/clips/a.png",  # userinfo trick
                "https://media.example.com:8443/clips/a.png",         # another port
                "http://media.example.com/clips/a.png",               # another scheme
                "s3://bucket/clipsX/a.mp4", "s3://bucket2/clips/a.mp4"]:
        with pytest.raises(URIRefused):
            check_uri(bad, allowed)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "[::1]", "10.0.0.1", "192.168.1.5", "172.16.0.9",
                                  "[fd12::1]", "169.254.1.1", "[::ffff:127.0.0.1]", "0.0.0.0", "2130706433",
                                  "100.100.100.200"])
def test_loopback_private_link_local_refused(host):
    prefix = f"http://{host}/"
    with pytest.raises(URIRefused, match="refused"):
        check_uri(f"http://{host}/a.png", [prefix])


def test_private_hosts_need_the_explicit_setting():
    assert check_uri("http://127.0.0.1:9/a.png", ["http://127.0.0.1:9/"], allow_private_hosts=True).address == "127.0.0.1"
    with pytest.raises(URIRefused):  # link-local stays refused
        check_uri("http://169.254.169.254/a", ["http://169.254.169.254/"], allow_private_hosts=True)


def test_http_connects_to_the_checked_address(monkeypatch):
    """DNS used to be checked, then resolved again by urllib (rebinding); now one lookup and the
    connection goes to the checked IP, with the URI's host in the Host header."""
    import http.server

    seen_hosts = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen_hosts.append(self.headers.get("Host"))
            body = b"image-bytes" if self.path == "/media/a.png" else b""
            self.send_response(200 if body else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    real = socket.getaddrinfo
    lookups = []

    def rebinding(host, *args, **kwargs):
        if host == "media.test":
            lookups.append(host)  # first answer: the server; later ones: somewhere else
            ip = "127.0.0.1" if len(lookups) == 1 else "127.0.0.2"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    cfg = ServeConfig(allowed_uri_prefixes=[f"http://media.test:{port}/media/"], uri_allow_private_hosts=True,
                      uri_connect_timeout_s=2, uri_read_timeout_s=2)
    try:
        assert read_uri(f"http://media.test:{port}/media/a.png", cfg) == b"image-bytes"
        assert lookups == ["media.test"] and seen_hosts == [f"media.test:{port}"]
        lookups.clear()  # a new request resolves anew (once)
        with pytest.raises(NotFound):
            read_uri(f"http://media.test:{port}/media/missing.png", cfg)
    finally:
        srv.shutdown()


def test_s3_reads_use_server_config_and_time_out(monkeypatch):
    """Object-store reads go to the configured endpoint, and a silent endpoint fails within the
    timeout instead of holding the request forever."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (in the kernel backlog) and never answers
    cfg = ServeConfig(allowed_uri_prefixes=["s3://bucket/clips/"], s3_endpoint_override=f"127.0.0.1:{silent.getsockname()[1]}",
                      s3_scheme="http", s3_region="us-east-1", uri_connect_timeout_s=1, uri_read_timeout_s=1)
    outcome: list = []

    def go():
        try:
            read_uri("s3://bucket/clips/a.mp4", cfg)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            outcome.append(exc)

    t0 = time.monotonic()
    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(60)
    try:
        assert not t.is_alive(), "an S3 read of a silent endpoint did not time out"
        assert isinstance(outcome[0], UpstreamError), outcome
        assert time.monotonic() - t0 < 60
    finally:
        silent.close()


def test_s3_read_from_a_local_s3_server(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(k, v)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
        s3.create_bucket(Bucket="bucket")
        s3.put_object(Bucket="bucket", Key="clips/a.bin", Body=b"object-bytes")
        cfg = ServeConfig(allowed_uri_prefixes=["s3://bucket/clips/"], s3_endpoint_override=f"127.0.0.1:{port}",
                          s3_scheme="http", s3_region="us-east-1")
        assert read_uri("s3://bucket/clips/a.bin", cfg) == b"object-bytes"
        with pytest.raises(NotFound):
            read_uri("s3://bucket/clips/missing.bin", cfg)
    finally:
        server.stop()
