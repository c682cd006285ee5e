"""The ingress's outer guard: CORS (off by default), API keys, and per-route body caps.

``Guard`` is an ASGI middleware in front of every route. Serve pickles the FastAPI app (and its
middleware) when the deployment class is decorated, before any config exists, so the guard reads
its settings from this module at request time: ``HQSegAPI.__init__`` calls :func:`configure`
in the replica process. Until then every request gets 503 (fail closed).

* API keys: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; each given key is compared with
  every configured key by ``hmac.compare_digest`` (constant time, no early exit). ``/healthz``
  needs no key (load balancers probe it).
* CORS: only for ``serve.cors_allow_origins`` (none by default: no CORS headers at all).
* Body caps: uploads (``POST /v1/images``, ``/v1/segment``, ``/v1/videos``) up to
  ``serve.max_upload_bytes``; every other route up to ``serve.max_json_bytes``. Checked on
  Content-Length before reading and on the bytes received (chunked or lying clients): 413.
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

UPLOAD_ROUTES = ("/v1/images", "/v1/segment", "/v1/videos")
# the review page's shell and its static assets carry no data (a browser cannot send a header
# when it navigates); the page sends the key itself on every /ui/api and /v1 call
OPEN_ROUTES = ("/healthz", "/ui", "/ui/")
OPEN_PREFIXES = ("/ui/static/",)


def _open(path: str) -> bool:
    """True for a route that needs no API key: one of OPEN_ROUTES, or a single file name (no
    further ``/``, no dot segment) right under one of OPEN_PREFIXES."""
    if path in OPEN_ROUTES:
        return True
    for prefix in OPEN_PREFIXES:
        rest = path[len(prefix):] if path.startswith(prefix) else None
        if rest and "/" not in rest and rest not in (".", ".."):
            return True
    return False


@dataclass(frozen=True)
class SecuritySettings:
    api_keys: tuple[str, ...] = ()
    cors_allow_origins: tuple[str, ...] = ()
    max_upload_bytes: int = 64 << 20
    max_json_bytes: int = 1 << 20

    @classmethod
    def from_config(cls, cfg: Any, environ: Optional[Mapping[str, str]] = None) -> "SecuritySettings":
        """Settings of a ``ServeConfig``; keys from ``cfg.api_keys_file`` and the environment
        variable ``cfg.api_keys_env``. A configured source without any key raises RuntimeError
        (the replica does not start rather than serve unauthenticated)."""
        environ = os.environ if environ is None else environ
        keys: list[str] = []
        if cfg.api_keys_file:
            try:
                with open(cfg.api_keys_file, encoding="utf-8") as f:
                    keys += [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
            except OSError as exc:
                raise RuntimeError(f"serve.api_keys_file {cfg.api_keys_file!r}: cannot read ({exc.strerror})") from None
        if cfg.api_keys_env:
            keys += [k for k in environ.get(cfg.api_keys_env, "").replace(",", " ").split() if k]
        if (cfg.api_keys_file or cfg.api_keys_env) and not keys:
            raise RuntimeError(f"no API key found (serve.api_keys_file={cfg.api_keys_file!r}, "
                               f"serve.api_keys_env={cfg.api_keys_env!r}); refusing to serve unauthenticated")
        return cls(tuple(dict.fromkeys(keys)), tuple(cfg.cors_allow_origins), int(cfg.max_upload_bytes),
                   int(cfg.max_json_bytes))

    def body_limit(self, method: str, path: str) -> tuple[int, str]:
        """(bytes, setting name) a request body on this route may have."""
        if method == "POST" and path.rstrip("/") in UPLOAD_ROUTES:
            return self.max_upload_bytes, "serve.max_upload_bytes"
        return self.max_json_bytes, "serve.max_json_bytes"

    def key_ok(self, given: str) -> bool:
        ok = False
        for key in self.api_keys:  # no early exit: the time does not say which key matched
            ok |= hmac.compare_digest(key.encode(), given.encode())
        return ok


_SETTINGS: Optional[SecuritySettings] = None


def configure(cfg: Any) -> SecuritySettings:
    """Install the settings of this replica (called by ``HQSegAPI.__init__``)."""
    global _SETTINGS
    _SETTINGS = SecuritySettings.from_config(cfg)
    return _SETTINGS


class _BodyTooLarge(Exception):
    pass


async def send_json(send, status: int, detail: str, headers: tuple = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: CORS, then API keys, then the body cap of the route (see module doc)."""

    def __init__(self, app, settings: Optional[SecuritySettings] = None) -> None:
        self.app = app
        self._settings = settings
        self._cors: Optional[tuple[tuple, Any]] = None

    def settings(self) -> Optional[SecuritySettings]:
        return self._settings if self._settings is not None else _SETTINGS

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        settings = self.settings()
        if settings is None:
            return await send_json(send, 503, "the server is starting")
        if settings.cors_allow_origins:
            if self._cors is None or self._cors[0] != settings.cors_allow_origins:
                from starlette.middleware.cors import CORSMiddleware

                self._cors = (settings.cors_allow_origins, CORSMiddleware(
                    self._guarded, allow_origins=list(settings.cors_allow_origins),
                    allow_methods=["GET", "POST", "DELETE"],
                    allow_headers=["authorization", "x-api-key", "content-type"], max_age=600))
            return await self._cors[1](scope, receive, send)
        return await self._guarded(scope, receive, send)

    async def _guarded(self, scope, receive, send):
        settings = self.settings()
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        headers = dict(scope.get("headers") or [])
        if settings.api_keys and not _open(path):
            auth = headers.get(b"authorization", b"").decode("latin-1")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get(b"x-api-key", b"").decode("latin-1")
            if not given or not settings.key_ok(given):
                return await send_json(send, 401, "missing or wrong API key: send 'Authorization: Bearer KEY' "
                                       "or 'X-API-Key: KEY'", ((b"www-authenticate", b'Bearer realm="hqseg"'),))
        limit, name = settings.body_limit(scope.get("method", "GET"), path)
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                return await send_json(send, 400, "Content-Length is not an integer")
            if n > limit:
                return await send_json(send, 413, f"request body of {n} bytes is over the limit of {limit} "
                                       f"bytes for {path} ({name})")
        received = 0
        started = rejected = False
        too_large = f"request body is over the limit of {limit} bytes for {path} ({name})"

        async def limited_receive():
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started and not rejected:  # answer now: the app's own error answer is dropped
                        rejected = True
                        await send_json(send, 413, too_large)
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if rejected:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            pass
