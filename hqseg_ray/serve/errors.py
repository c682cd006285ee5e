"""Client errors of the online endpoint, each with its HTTP status.

They subclass ValueError so that library code raising them reads like any other input error; the
ingress turns every one into ``{"detail": message}`` with its status, never a 5xx.
"""

from __future__ import annotations


class ClientError(ValueError):
    status = 400


class NotFound(ClientError):
    status = 404


class Forbidden(ClientError):
    status = 403


class PayloadTooLarge(ClientError):
    status = 413


class Busy(ClientError):
    status = 429


def status_of(exc: BaseException) -> int:
    """HTTP status for an exception raised while serving a request (400 for plain ValueError)."""
    return getattr(exc, "status", 400)


class Conflict(ClientError):
    status = 409
