"""The one place the exports write bytes: every export file goes through :func:`write_bytes`,
which writes through :mod:`hqseg_ray.storage` (local paths, file://, s3://, gs://): atomically
(local: temporary name, fsync, rename; object stores: the final key in one PUT), so a reader never
sees a half-written export.
"""

from __future__ import annotations


def write_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` (a path or URI) atomically; returns ``path``."""
    from hqseg_ray.storage import split_uri

    store, name = split_uri(str(path))
    store.write_bytes(name, data)
    return path


def upload_atomic(path: str, local_file: str) -> None:
    """Copy a finished local file (e.g. an encoder's MP4) to ``path`` (path or URI) atomically."""
    from hqseg_ray.storage import split_uri

    store, name = split_uri(path)
    store.upload_file(name, local_file)


def write_text(path: str, text: str) -> str:
    """:func:`write_bytes` of UTF-8 text."""
    return write_bytes(path, text.encode("utf-8"))
