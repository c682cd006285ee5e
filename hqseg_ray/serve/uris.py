"""Which URIs a client may make the server read, and reading them with a byte bound.

A URI is allowed only when it starts with one of the configured prefixes *after* normalisation:
``file://`` paths are resolved (``..`` and symlinks) before the prefix check, and HTTP(S) hosts
that are link-local or cloud metadata endpoints are refused whatever the prefixes say (their
names are resolved, so a DNS name pointing at 169.254.169.254 is refused too).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Sequence

from hqseg_ray.serve.errors import Forbidden, NotFound, PayloadTooLarge

METADATA_HOSTS = {"metadata.google.internal", "metadata", "metadata.goog", "instance-data",
                  "instance-data.ec2.internal"}
METADATA_IPS = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
                ipaddress.ip_address("100.100.100.200")}
OBJECT_STORE_SCHEMES = ("s3://", "gs://")


class URIRefused(Forbidden):
    """The URI is not one this server may read (answered with 403)."""


def _refuse_address(host: str, uri: str) -> None:
    host = host.strip("[]").lower().rstrip(".")
    if host in METADATA_HOSTS:
        raise URIRefused(f"uri {uri!r}: host {host!r} is a cloud metadata endpoint; refused")
    try:
        addrs = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError as exc:
            raise URIRefused(f"uri {uri!r}: cannot resolve host {host!r} ({exc})") from exc
        addrs = {ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos}
    for a in addrs:
        if a in METADATA_IPS or a.is_link_local or a.is_multicast or a.is_unspecified:
            raise URIRefused(f"uri {uri!r}: host {host!r} resolves to {a}, a link-local or metadata "
                             "address; refused")


def _file_path(uri: str) -> Path:
    parsed = urllib.parse.urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise URIRefused(f"uri {uri!r}: file:// URIs must not name a host")
    return Path(urllib.parse.unquote(parsed.path))


def check_uri(uri: str, allowed_prefixes: Sequence[str]) -> str:
    """Return the normalised URI if the policy allows it; raise :class:`URIRefused` otherwise."""
    if not isinstance(uri, str) or not uri:
        raise URIRefused("uri must be a non-empty string")
    if not allowed_prefixes:
        raise URIRefused(f"uri {uri!r}: this server reads no URIs (serve.allowed_uri_prefixes is empty)")
    if any(part == ".." for part in urllib.parse.unquote(uri).replace("\\", "/").split("/")):
        raise URIRefused(f"uri {uri!r}: '..' path segments are not allowed")
    lowered = uri.lower()
    if lowered.startswith("file://"):
        path = Path(os.path.realpath(_file_path(uri)))
        for prefix in allowed_prefixes:
            if prefix.lower().startswith("file://"):
                root = Path(os.path.realpath(_file_path(prefix)))
                if path == root or root in path.parents:
                    return "file://" + str(path)
        raise URIRefused(f"uri {uri!r}: {path} is outside the allowed prefixes {list(allowed_prefixes)}")
    if lowered.startswith(("http://", "https://")):
        host = urllib.parse.urlparse(uri).hostname or ""
        _refuse_address(host, uri)
    elif not lowered.startswith(OBJECT_STORE_SCHEMES):
        raise URIRefused(f"uri {uri!r}: unsupported scheme (file://, http(s)://, s3://, gs://)")
    if not any(uri.startswith(p) for p in allowed_prefixes if not p.lower().startswith("file://")):
        raise URIRefused(f"uri {uri!r} is outside the allowed prefixes {list(allowed_prefixes)}")
    return uri


def read_uri(uri: str, allowed_prefixes: Sequence[str], max_bytes: int) -> bytes:
    """Check ``uri`` against the policy and read at most ``max_bytes`` of it.

    Raises URIRefused (policy, 403), NotFound (missing, 404) or ValueError (too large / unreadable).
    """
    uri = check_uri(uri, allowed_prefixes)
    if uri.startswith("file://"):
        path = _file_path(uri)
        if not path.is_file():
            raise NotFound(f"uri {uri!r}: no such file")
        try:
            with open(path, "rb") as f:
                data = f.read(max_bytes + 1)
        except OSError as exc:
            raise ValueError(f"uri {uri!r}: cannot read ({exc.strerror})") from exc
    elif uri.startswith(("http://", "https://")):
        import urllib.request

        class _NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):  # a redirect could point anywhere
                return None

        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(uri, timeout=30) as resp:
                data = resp.read(max_bytes + 1)
        except OSError as exc:
            raise ValueError(f"uri {uri!r}: cannot read ({exc})") from exc
    else:
        import pyarrow.fs

        try:
            fs, path = pyarrow.fs.FileSystem.from_uri(uri)
            with fs.open_input_stream(path) as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError:
            raise NotFound(f"uri {uri!r}: no such object") from None
        except OSError as exc:
            raise ValueError(f"uri {uri!r}: cannot read ({exc})") from exc
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"uri {uri!r} is larger than serve.max_upload_bytes ({max_bytes} bytes)")
    return data
