"""Which URIs a client may make the server read, and reading exactly what was checked.

A URI is parsed once into (scheme, host, port, path); the path is %-decoded exactly once and
refused if any segment is ``.`` or ``..`` (or empty), and that parsed form is what is both
checked and read. Allowed prefixes (``serve.allowed_uri_prefixes``) are parsed the same way and
compared structurally: same scheme, same host, same port, and the prefix's path segments are the
first segments of the URI's path (``/media`` allows ``/media/a.png``, not ``/media-private/a.png``).

* ``file://``: no host; the path is resolved (symlinks) and must lie under a prefix's resolved
  folder; the resolved path is opened (``O_NOFOLLOW``, regular files only).
* ``http(s)://``: no user info; the host is resolved ONCE, every address is checked (link-local,
  cloud metadata, multicast and reserved always refused; loopback and private refused unless
  ``serve.uri_allow_private_hosts``), and the connection goes to the checked address (TLS still
  verifies the URI's host name). No redirects; connect and read timeouts.
* ``s3://`` / ``gs://``: no query, fragment, user info or port (pyarrow would take endpoints and
  credentials from them); the filesystem comes from the server's config (endpoint, region,
  timeouts), never from the URI.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import stat
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hqseg_ray.serve.errors import Forbidden, NotFound, PayloadTooLarge, UpstreamError

METADATA_HOSTS = {"metadata.google.internal", "metadata", "metadata.goog", "instance-data",
                  "instance-data.ec2.internal"}
METADATA_IPS = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
                ipaddress.ip_address("100.100.100.200")}
SCHEMES = ("file", "http", "https", "s3", "gs")
DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_URI_CHARS = 4096


class URIRefused(Forbidden):
    """The URI is not one this server may read (answered with 403)."""


@dataclass(frozen=True)
class CheckedURI:
    """A URI that passed the policy, in the parsed form that is read.

    ``path``: ``file``: the resolved absolute path; ``http(s)``: the decoded request path;
    ``s3``/``gs``: ``bucket/key``. ``address``: ``http(s)``: the checked IP to connect to.
    """

    uri: str
    scheme: str
    host: str
    port: Optional[int]
    path: str
    query: str = ""
    address: Optional[str] = None


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    host: str
    port: Optional[int]
    segments: tuple[str, ...]
    query: str
    trailing_slash: bool = False


def _parse(uri: str, what: str, is_prefix: bool = False) -> _Parsed:
    if not isinstance(uri, str) or not uri:
        raise URIRefused(f"{what} must be a non-empty string")
    if len(uri) > MAX_URI_CHARS:
        raise URIRefused(f"{what} is longer than {MAX_URI_CHARS} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in uri) or "\\" in uri:
        raise URIRefused(f"{what} {uri[:200]!r}: control characters, spaces or backslashes are not allowed")
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise URIRefused(f"{what} {uri!r}: malformed ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise URIRefused(f"{what} {uri!r}: unsupported scheme (file://, http(s)://, s3://, gs://)")
    if "@" in parts.netloc:
        raise URIRefused(f"{what} {uri!r}: user info ('user@') is not allowed")
    if parts.fragment or uri.endswith("#"):
        raise URIRefused(f"{what} {uri!r}: a fragment ('#...') is not allowed")
    if parts.query or "?" in uri:
        if scheme != "http" and scheme != "https":
            raise URIRefused(f"{what} {uri!r}: a query ('?...') is not allowed on {scheme}:// URIs "
                             "(the server's own config says how to reach the store)")
    host = (parts.hostname or "").rstrip(".")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise URIRefused(f"{what} {uri!r}: file:// URIs must not name a host")
        host = ""
    elif not host:
        raise URIRefused(f"{what} {uri!r}: no host")
    if scheme in ("s3", "gs", "file") and port is not None:
        raise URIRefused(f"{what} {uri!r}: a port is not allowed on {scheme}:// URIs")
    if scheme in DEFAULT_PORTS:
        port = port or DEFAULT_PORTS[scheme]
    try:
        path = urllib.parse.unquote(parts.path, errors="strict")  # decoded exactly once
    except UnicodeDecodeError:
        raise URIRefused(f"{what} {uri!r}: the path is not valid %-encoded UTF-8") from None
    if "\x00" in path or "\\" in path:
        raise URIRefused(f"{what} {uri!r}: NUL or backslash in the path")
    segments = path.split("/")
    if segments and segments[0] == "":
        segments = segments[1:]
    trailing = bool(segments) and segments[-1] == ""
    if trailing and (is_prefix or scheme in DEFAULT_PORTS):  # http(s) may name 'a/' (an index page)
        segments = segments[:-1]
    for s in segments:
        if s in (".", ".."):
            raise URIRefused(f"{what} {uri!r}: '.' and '..' path segments are not allowed")
        if s == "":
            raise URIRefused(f"{what} {uri!r}: empty path segments ('//' or a trailing '/') are not allowed")
    if scheme == "file" and not parts.path.startswith("/"):
        raise URIRefused(f"{what} {uri!r}: file:// paths must be absolute")
    return _Parsed(scheme, host.lower(), port, tuple(segments), parts.query, trailing)


def _address_problem(ip: "ipaddress._BaseAddress", allow_private: bool) -> Optional[str]:
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    if (ip in METADATA_IPS or ip.is_link_local or ip.is_multicast or ip.is_unspecified or ip.is_reserved):
        return f"{ip} is a link-local or metadata (or multicast, unspecified, reserved) address"
    if ip.is_global:
        return None
    if allow_private and (ip.is_loopback or ip.is_private):
        return None
    return (f"{ip} is a loopback or private address (serve.uri_allow_private_hosts lets an "
            "internal deployment read from such hosts)")


def _resolve(host: str, port: int, uri: str, allow_private: bool) -> str:
    """The one resolution of ``host``: every address must pass; the first is connected to."""
    try:
        addrs = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise URIRefused(f"uri {uri!r}: cannot resolve host {host!r} ({exc})") from None
        addrs = [ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos]
        if not addrs:
            raise URIRefused(f"uri {uri!r}: host {host!r} has no address")
    for a in addrs:
        problem = _address_problem(a, allow_private)
        if problem:
            raise URIRefused(f"uri {uri!r}: host {host!r} resolves to {problem}; refused")
    return str(addrs[0])


def _under(segments: Sequence[str], prefix: Sequence[str]) -> bool:
    return len(segments) >= len(prefix) and tuple(segments[:len(prefix)]) == tuple(prefix)


def check_uri(uri: str, allowed_prefixes: Sequence[str], allow_private_hosts: bool = False) -> CheckedURI:
    """The URI in its checked, parsed form if the policy allows it; :class:`URIRefused` otherwise."""
    if not allowed_prefixes:
        raise URIRefused(f"uri {str(uri)[:200]!r}: this server reads no URIs (serve.allowed_uri_prefixes is empty)")
    p = _parse(uri, "uri")
    outside = URIRefused(f"uri {uri!r} is outside the allowed prefixes {list(allowed_prefixes)}")
    prefixes = [_parse(a, "allowed prefix", is_prefix=True) for a in allowed_prefixes]
    if p.scheme == "file":
        real = Path(os.path.realpath("/" + "/".join(p.segments)))
        for a in prefixes:
            if a.scheme == "file":
                root = Path(os.path.realpath("/" + "/".join(a.segments)))
                if real == root or root in real.parents:
                    return CheckedURI(uri, "file", "", None, str(real))
        raise URIRefused(f"uri {uri!r}: {real} is outside the allowed prefixes {list(allowed_prefixes)}")
    if p.scheme in ("http", "https"):
        if p.host in METADATA_HOSTS:
            raise URIRefused(f"uri {uri!r}: host {p.host!r} is a cloud metadata endpoint; refused")
        try:  # a literal address is refused before the prefixes are looked at (no DNS involved)
            problem = _address_problem(ipaddress.ip_address(p.host.strip("[]")), allow_private_hosts)
        except ValueError:
            problem = None
        if problem:
            raise URIRefused(f"uri {uri!r}: {problem}; refused")
    if not any(a.scheme == p.scheme and a.host == p.host and a.port == p.port and _under(p.segments, a.segments)
               for a in prefixes):
        raise outside
    if p.scheme in ("s3", "gs"):
        if not p.segments:
            raise URIRefused(f"uri {uri!r}: no object key")
        return CheckedURI(uri, p.scheme, p.host, None, "/".join((p.host,) + p.segments))
    address = _resolve(p.host, int(p.port or 0), uri, allow_private_hosts)
    path = "/" + "/".join(p.segments) + ("/" if p.trailing_slash and p.segments else "")
    return CheckedURI(uri, p.scheme, p.host, p.port, path, p.query, address)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

def read_uri(uri: str, cfg: Any, max_bytes: Optional[int] = None) -> bytes:
    """Check ``uri`` against ``cfg`` (a ``ServeConfig``) and read at most ``max_bytes`` of it
    (default ``cfg.max_upload_bytes``).

    Raises URIRefused (policy, 403), NotFound (404), PayloadTooLarge (413) or UpstreamError
    (the store or host failed or timed out, 502).
    """
    limit = int(max_bytes if max_bytes is not None else cfg.max_upload_bytes)
    checked = check_uri(uri, cfg.allowed_uri_prefixes, cfg.uri_allow_private_hosts)
    if checked.scheme == "file":
        data = _read_file(checked, limit)
    elif checked.scheme in ("http", "https"):
        data = _read_http(checked, cfg, limit)
    else:
        data = _read_object(checked, cfg, limit)
    if len(data) > limit:
        raise PayloadTooLarge(f"uri {uri!r} is larger than serve.max_upload_bytes ({limit} bytes)")
    return data


def _read_file(c: CheckedURI, limit: int) -> bytes:
    try:
        fd = os.open(c.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise NotFound(f"uri {c.uri!r}: no such file") from None
    except OSError as exc:
        raise NotFound(f"uri {c.uri!r}: cannot open ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise NotFound(f"uri {c.uri!r}: not a regular file")
        try:
            return f.read(limit + 1)
        except OSError as exc:
            raise NotFound(f"uri {c.uri!r}: cannot read ({exc.strerror})") from None


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, connect_timeout: float, read_timeout: float) -> None:
        super().__init__(host, port, timeout=read_timeout)
        self._address, self._connect_timeout = address, connect_timeout

    def _socket(self) -> socket.socket:
        sock = socket.create_connection((self._address, self.port), self._connect_timeout)
        sock.settimeout(self.timeout)
        return sock

    def connect(self) -> None:
        self.sock = self._socket()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    def connect(self) -> None:
        ctx = ssl.create_default_context()
        self.sock = ctx.wrap_socket(self._socket(), server_hostname=self.host)


def _read_http(c: CheckedURI, cfg: Any, limit: int) -> bytes:
    cls = _PinnedHTTPSConnection if c.scheme == "https" else _PinnedHTTPConnection
    conn = cls(c.host, c.address, int(c.port), cfg.uri_connect_timeout_s, cfg.uri_read_timeout_s)
    target = urllib.parse.quote(c.path, safe="/!$&'()*+,;=:@-._~") + (f"?{c.query}" if c.query else "")
    try:
        conn.request("GET", target, headers={"User-Agent": "hqseg-ray", "Accept": "*/*"})
        resp = conn.getresponse()
        if resp.status in (404, 410):
            raise NotFound(f"uri {c.uri!r}: the host answered {resp.status}")
        if resp.status != 200:  # redirects included: they could point anywhere
            raise UpstreamError(f"uri {c.uri!r}: the host answered {resp.status} {resp.reason}")
        return resp.read(limit + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise UpstreamError(f"uri {c.uri!r}: cannot read ({type(exc).__name__}: {exc})") from None
    finally:
        conn.close()


def object_store_filesystem(scheme: str, cfg: Any):
    """The pyarrow filesystem for ``s3``/``gs`` built from the server config (endpoint, region,
    timeouts); credentials come from the server's environment, never from a URI."""
    import datetime

    import pyarrow.fs as pafs

    if scheme == "s3":
        kwargs: dict = {"connect_timeout": cfg.uri_connect_timeout_s, "request_timeout": cfg.uri_read_timeout_s,
                        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=2), "scheme": cfg.s3_scheme}
        if cfg.s3_endpoint_override:
            kwargs["endpoint_override"] = cfg.s3_endpoint_override
        if cfg.s3_region:
            kwargs["region"] = cfg.s3_region
        return pafs.S3FileSystem(**kwargs)
    kwargs = {"retry_time_limit": datetime.timedelta(seconds=cfg.uri_connect_timeout_s + cfg.uri_read_timeout_s)}
    if cfg.gcs_endpoint_override:
        kwargs.update(endpoint_override=cfg.gcs_endpoint_override, scheme="http")
    return pafs.GcsFileSystem(**kwargs)


def _read_object(c: CheckedURI, cfg: Any, limit: int) -> bytes:
    try:
        fs = object_store_filesystem(c.scheme, cfg)
        with fs.open_input_stream(c.path) as f:
            return f.read(limit + 1)
    except FileNotFoundError:
        raise NotFound(f"uri {c.uri!r}: no such object") from None
    except (OSError, ValueError) as exc:  # pyarrow: OSError for network / auth, ArrowInvalid (ValueError)
        raise UpstreamError(f"uri {c.uri!r}: cannot read ({exc})") from None
