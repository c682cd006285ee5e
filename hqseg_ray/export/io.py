"""The one place the exports write bytes: every export file goes through :func:`write_bytes`.

Writes are atomic (a temporary name in the same folder, then a rename), so a reader never sees a
half-written export. This is the helper to point at the storage module (``pyarrow.fs``) when
exports learn to write to object stores.
"""

from __future__ import annotations

import os
import uuid


def write_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (parent folders created); returns ``path``."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def write_text(path: str, text: str) -> str:
    """:func:`write_bytes` of UTF-8 text."""
    return write_bytes(path, text.encode("utf-8"))
