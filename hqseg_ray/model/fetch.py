"""Checkpoint downloads that work on a real cluster: once per node, resumed, retried, authenticated.

``download(url, dest, ...)`` is what ``registry.resolve_checkpoint`` uses for ``https://`` (and
``http://``) checkpoints:

- **Once per node**: an exclusive file lock (``filelock``) next to the destination serialises every
  process of the node (64 actors on 8 GPUs = one download; the other 63 wait, then find the
  verified file). On a shared volume (a ReadWriteMany PVC) the lock works across nodes as far as
  the filesystem supports ``flock``/``fcntl`` locks (EFS and Filestore do).
- **Resume**: the transfer goes to ``<dest>.part``; a cut connection is resumed with an HTTP
  ``Range: bytes=N-`` request (``206 Partial Content``), so a 2.57 GB vit_h file is not restarted
  from zero. A server that ignores ``Range`` (``200``) restarts the file.
- **Retries with backoff**: 408/425/429/5xx answers and network errors are retried up to
  ``RetryPolicy.attempts`` times with exponential backoff and jitter, honouring ``Retry-After``
  (seconds or an HTTP date, capped at ``max_delay_s``). 4xx answers other than those fail at once.
- **Auth**: ``HF_TOKEN`` (or ``HUGGING_FACE_HUB_TOKEN``) is sent as ``Authorization: Bearer`` to the
  Hugging Face endpoint (``HF_ENDPOINT``, default https://huggingface.co) only;
  ``HQSEG_CHECKPOINT_AUTH`` (a full header value, e.g. ``Bearer abc``) to the checkpoint URL's own
  host. Neither is forwarded when a redirect leaves that host (Hugging Face redirects to a
  pre-signed CDN URL, which rejects a second auth mechanism and must not see the token).
- **Verification**: size and sha256 when known (pinned by the caller, or published by the server as
  Hugging Face's ``X-Linked-Etag``, the sha256 of an LFS file); only a verified file is renamed into
  place, atomically.

No torch import here, so ``python -m hqseg_ray.model.fetch`` (pre-fetching into an image or a
volume) and the lock tests start fast.
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import http.client
import logging
import os
import random
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_SHA256 = re.compile(r'^(?:W/)?"?([0-9a-fA-F]{64})"?$')


class FetchError(RuntimeError):
    """A download failed for good (not retryable, or out of attempts); the message names the URL."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard ``download`` tries. Environment overrides: HQSEG_FETCH_ATTEMPTS, HQSEG_FETCH_TIMEOUT_S,
    HQSEG_FETCH_BASE_DELAY_S."""

    attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 120.0
    timeout_s: float = 60.0           # per socket operation (connect, each read), not the whole file
    lock_timeout_s: float = 6 * 3600  # how long a process waits for another one's download

    @classmethod
    def from_env(cls) -> "RetryPolicy":
        return cls(attempts=max(1, int(os.environ.get("HQSEG_FETCH_ATTEMPTS", cls.attempts))),
                   timeout_s=float(os.environ.get("HQSEG_FETCH_TIMEOUT_S", cls.timeout_s)),
                   base_delay_s=float(os.environ.get("HQSEG_FETCH_BASE_DELAY_S", cls.base_delay_s)))

    def delay(self, attempt: int, retry_after: Optional[float]) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay_s)
        return min(self.base_delay_s * (2 ** attempt), self.max_delay_s) * random.uniform(0.5, 1.0)


@dataclass
class FetchInfo:
    """What the server said about the file: a published sha256 and the repository commit (Hugging Face)."""

    published_sha256: Optional[str] = None
    revision: Optional[str] = None
    resumable: bool = False
    requests: int = 0
    headers: dict = field(default_factory=dict)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: Optional[float] = None):
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """``Retry-After`` as seconds to wait: an integer, or an HTTP date; None when absent/unparsable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def auth_headers(url: str) -> dict[str, str]:
    """The Authorization header for ``url`` from the environment (see the module docstring)."""
    headers: dict[str, str] = {}
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if token and url.startswith(hf_endpoint() + "/"):
        headers["Authorization"] = f"Bearer {token.strip()}"
    explicit = os.environ.get("HQSEG_CHECKPOINT_AUTH")
    if explicit:
        headers["Authorization"] = explicit.strip()
    return headers


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, drops Authorization when the host changes, records the hops' headers."""

    def __init__(self, info: FetchInfo):
        self.info = info

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        self.info.headers.update({k.lower(): v for k, v in headers.items()})
        if new is not None and urlsplit(newurl).hostname != urlsplit(req.full_url).hostname:
            new.remove_header("Authorization")  # from headers and unredirected_hdrs alike
        return new


def _open(url: str, have: int, timeout: float, info: FetchInfo):
    headers = {"User-Agent": "hqseg-ray", **auth_headers(url)}
    if have:
        headers["Range"] = f"bytes={have}-"
    info.requests += 1
    opener = urllib.request.build_opener(_Redirects(info))
    return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)


def _transfer(url: str, part: Path, size: Optional[int], timeout: float, info: FetchInfo) -> None:
    """One attempt: (re)start or resume ``part``. Raises _Retryable or FetchError."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is not None and have == size:
        return
    try:
        resp = _open(url, have, timeout, info)
    except urllib.error.HTTPError as exc:
        retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        exc.close()
        if exc.code == 416 and have:
            part.unlink()  # our partial file does not fit the server's file: start over
            raise _Retryable(f"HTTP 416 resuming at byte {have}; restarting") from exc
        if exc.code in RETRY_STATUS:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}", retry_after) from exc
        hint = ""
        if exc.code in (401, 403):
            hint = " (set HF_TOKEN for Hugging Face, or HQSEG_CHECKPOINT_AUTH='Bearer ...' for another host)"
        raise FetchError(f"checkpoint {url!r}: HTTP {exc.code} {exc.reason}{hint}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retryable(f"cannot connect: {exc}") from exc
    with resp:
        hdrs = {k.lower(): v for k, v in resp.headers.items()}
        info.headers.update(hdrs)
        published = _SHA256.match(info.headers.get("x-linked-etag", ""))
        info.published_sha256 = published.group(1).lower() if published else info.published_sha256
        info.revision = info.headers.get("x-repo-commit", info.revision)
        info.resumable = hdrs.get("accept-ranges", "").lower() == "bytes" or resp.status == 206
        if have and resp.status == 206:
            m = re.match(r"bytes (\d+)-", hdrs.get("content-range", ""))
            if not m or int(m.group(1)) != have:
                part.unlink()
                raise _Retryable(f"server resumed at {hdrs.get('content-range')!r}, asked for byte {have}")
            mode = "ab"
        else:
            have, mode = 0, "wb"
        declared = hdrs.get("content-length")
        written = 0
        try:
            with open(part, mode) as out:
                while True:
                    block = resp.read(1 << 20)
                    if not block:
                        break
                    out.write(block)
                    written += len(block)
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(f"connection cut after {have + written} bytes: {exc}") from exc
        if declared is not None and written != int(declared):
            raise _Retryable(f"transfer ended after {have + written} of {have + int(declared)} bytes")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def node_lock(dest: Path, timeout: float):
    """The exclusive lock that makes one process per node (or shared volume) fetch ``dest``."""
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(dest) + ".lock", timeout=timeout)


def download(url: str, dest: Path, size: Optional[int] = None, sha256: Optional[str] = None,
             policy: Optional[RetryPolicy] = None,
             verify: Optional[Callable[[Path], None]] = None) -> Path:
    """Fetch ``url`` into ``dest`` once per node (see the module docstring); returns ``dest``.

    ``verify(path)``, if given, checks an existing ``dest`` found under the lock (another process
    finished it) and raises to make this call fetch again.
    """
    from filelock import Timeout

    policy = policy or RetryPolicy.from_env()
    dest = Path(dest)
    try:
        with node_lock(dest, policy.lock_timeout_s):
            return _download_locked(url, dest, size, sha256, policy, verify)
    except Timeout as exc:
        raise FetchError(f"checkpoint {url!r}: another process has been fetching it into {dest} for "
                         f"{policy.lock_timeout_s:.0f} s (lock {dest}.lock); is it stuck?") from exc


def _download_locked(url: str, dest: Path, size: Optional[int], sha256: Optional[str], policy: RetryPolicy,
                     verify: Optional[Callable[[Path], None]]) -> Path:
    """The body of :func:`download`, run while holding the node lock."""
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():
        try:
            (verify or (lambda p: _check(p, url, size, sha256)))(dest)
            logger.info("checkpoint %s already fetched (by another process) at %s", url, dest)
            return dest
        except Exception:  # noqa: BLE001 - any verification failure means: fetch again
            dest.unlink()
    info = FetchInfo()
    last = "no attempt made"
    for attempt in range(policy.attempts):
        try:
            _transfer(url, part, size, policy.timeout_s, info)
        except _Retryable as exc:
            last = str(exc)
            if attempt + 1 < policy.attempts:
                wait = policy.delay(attempt, exc.retry_after)
                logger.warning("checkpoint %s: %s; retry %d/%d in %.1f s", url, exc, attempt + 1,
                               policy.attempts - 1, wait)
                time.sleep(wait)
            continue
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        try:
            _check(part, url, size, sha256 or info.published_sha256)
        except FetchError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest)
        logger.info("downloaded %s (%d bytes%s) to %s", url, dest.stat().st_size,
                    f", revision {info.revision}" if info.revision else "", dest)
        return dest
    if not info.resumable:
        part.unlink(missing_ok=True)  # a server without Range support cannot continue it
    raise FetchError(f"checkpoint {url!r}: download failed after {policy.attempts} attempts: {last}"
                     + (f" (partial file kept for resume: {part})" if part.exists() else ""))


def _check(path: Path, url: str, size: Optional[int], sha256: Optional[str]) -> None:
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        raise FetchError(f"checkpoint {url!r}: got {got_size} bytes, expected {size} (truncated or wrong file)")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256.lower():
            raise FetchError(f"checkpoint {url!r}: sha256 {got} does not match expected {sha256}")


def probe(url: str, timeout: float = 20.0) -> FetchInfo:
    """Is ``url`` reachable with the credentials we have? One ``Range: bytes=0-0`` request (1 byte
    transferred); the result holds the file's size (``headers['size']``), Hugging Face's published
    sha256 and revision. Raises FetchError (with the HTTP status and a hint) when it is not."""
    info = FetchInfo()
    headers = {"User-Agent": "hqseg-ray", "Range": "bytes=0-0", **auth_headers(url)}
    opener = urllib.request.build_opener(_Redirects(info))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            info.headers.update({k.lower(): v for k, v in resp.headers.items()})
            info.resumable = resp.status == 206
    except urllib.error.HTTPError as exc:
        hint = " (set HF_TOKEN, or HQSEG_CHECKPOINT_AUTH)" if exc.code in (401, 403) else ""
        raise FetchError(f"checkpoint {url!r}: HTTP {exc.code} {exc.reason}{hint}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise FetchError(f"checkpoint {url!r}: not reachable: {exc}") from exc
    m = re.search(r"/(\d+)$", info.headers.get("content-range", ""))
    info.headers["size"] = int(m.group(1)) if m else None
    published = _SHA256.match(info.headers.get("x-linked-etag", ""))
    info.published_sha256 = published.group(1).lower() if published else None
    info.revision = info.headers.get("x-repo-commit")
    return info


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m hqseg_ray.model.fetch vit_h [vit_b ...] --dest DIR``: pre-fetch official checkpoints
    (into an image at build time, or onto a volume by a one-off Job), verified, once."""
    from hqseg_ray.model.official import OFFICIAL_CHECKPOINTS

    p = argparse.ArgumentParser(prog="python -m hqseg_ray.model.fetch", description=main.__doc__)
    p.add_argument("types", nargs="+", choices=sorted(OFFICIAL_CHECKPOINTS))
    p.add_argument("--dest", type=Path, default=Path(os.environ.get("HQSEG_WEIGHTS_DIR", "/opt/hqseg/weights")))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for t in args.types:
        c = OFFICIAL_CHECKPOINTS[t]
        path = download(c.url, args.dest / c.filename, c.size_bytes, c.sha256)
        print(f"{t}: {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
