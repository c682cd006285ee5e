"""Client errors of the online endpoint, each with its HTTP status.

They subclass ValueError so that library code raising them reads like any other input error; the
ingress turns every one into ``{"detail": message}`` with its status. Any other exception (a plain
ValueError included) is a server bug: 500, logged with its traceback.
"""

from __future__ import annotations


class ClientError(ValueError):
    status = 400


class NotFound(ClientError):
    status = 404


class Forbidden(ClientError):
    status = 403


class Conflict(ClientError):
    status = 409


class PayloadTooLarge(ClientError):
    status = 413


class Busy(ClientError):
    status = 429


class UpstreamError(ClientError):
    """A URI the client named could not be read from its server (unreachable, timed out, 5xx)."""

    status = 502


def status_of(exc: BaseException) -> int:
    """HTTP status for an exception raised while serving a request: a :class:`ClientError`'s own
    (also when it arrives wrapped by Ray as ``exc.cause``), else 500."""
    cause = getattr(exc, "cause", None)
    for e in (exc, cause):
        if isinstance(e, ClientError):
            return e.status
    return 500
