"""Where video bytes come from: local paths, ``file://``, ``s3://`` and ``gs://`` (via pyarrow.fs).

Remote files are opened as random-access files and handed to PyAV as file objects, so a probe or
a chunk decode reads (streams) only what the demuxer asks for; nothing is downloaded whole.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".mpg", ".mpeg",
              ".flv", ".wmv", ".3gp", ".h264", ".264", ".hevc", ".ivf", ".y4m", ".gif")
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://")
# PyAV reads file objects in blocks of this size; remote reads are one request per block, so
# larger blocks mean fewer requests (4 MiB: ~1 request per second of 30 Mbit/s video).
REMOTE_BLOCK = 4 << 20


class VideoError(Exception):
    """A video (or frame folder, or image) that cannot be read; names the input and the reason.

    Attributes:
        uri: the input as the caller gave it.
        reason: what is wrong, in words (and what to do, where known).
    """

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(uri, reason)  # args kept so the error pickles (Ray ships it between processes)
        self.uri = str(uri)
        self.reason = reason

    def __str__(self) -> str:
        return f"video {self.uri!r}: {self.reason}"


def natural_key(name: str) -> list:
    """Sort key that orders ``frame2`` before ``frame10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def is_remote(uri: str) -> bool:
    return str(uri).startswith(REMOTE_SCHEMES)


def local_path(uri: str) -> str:
    """``file:///a/b`` -> ``/a/b``; other local paths unchanged (``~`` expanded)."""
    uri = str(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    return os.path.expanduser(uri)


def resolve_fs(uri: str, filesystem: Any = None) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path inside it)`` for a remote URI; the given filesystem wins."""
    import pyarrow.fs as pafs

    if filesystem is not None:
        path = str(uri).split("://", 1)[-1]
        return filesystem, path
    try:
        return pafs.FileSystem.from_uri(str(uri))
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for bad schemes or credentials
        raise VideoError(uri, f"cannot reach its filesystem: {exc}") from exc


def file_kind(uri: str, filesystem: Any = None) -> str:
    """``"file"``, ``"dir"`` or ``"missing"``."""
    if not is_remote(uri) and filesystem is None:
        p = local_path(uri)
        return "dir" if os.path.isdir(p) else "file" if os.path.isfile(p) else "missing"
    import pyarrow.fs as pafs

    fs, path = resolve_fs(uri, filesystem)
    try:
        info = fs.get_file_info(path)
    except Exception as exc:
        raise VideoError(uri, f"cannot reach it: {exc}") from exc
    if info.type == pafs.FileType.Directory:
        return "dir"
    return "file" if info.type == pafs.FileType.File else "missing"


def list_images(uri: str, filesystem: Any = None) -> list[str]:
    """Image files directly inside a folder, in natural order (full paths/URIs)."""
    if not is_remote(uri) and filesystem is None:
        root = local_path(uri)
        names = [n for n in os.listdir(root) if n.lower().endswith(IMAGE_EXTS) and not n.startswith(".")]
        return [os.path.join(root, n) for n in sorted(names, key=natural_key)]
    import pyarrow.fs as pafs

    fs, path = resolve_fs(uri, filesystem)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    except Exception as exc:
        raise VideoError(uri, f"cannot list the folder: {exc}") from exc
    scheme = str(uri).split("://", 1)[0] + "://" if "://" in str(uri) else ""
    names = [i.path for i in infos if i.type == pafs.FileType.File and i.path.lower().endswith(IMAGE_EXTS)]
    return [scheme + p for p in sorted(names, key=lambda p: natural_key(p.rsplit("/", 1)[-1]))]


def read_bytes(uri: str, filesystem: Any = None) -> bytes:
    """Whole content of a (small) file, e.g. one image of a frame folder."""
    try:
        if not is_remote(uri) and filesystem is None:
            with open(local_path(uri), "rb") as f:
                return f.read()
        fs, path = resolve_fs(uri, filesystem)
        with fs.open_input_file(path) as f:
            return f.read()
    except VideoError:
        raise
    except FileNotFoundError as exc:
        raise VideoError(uri, "does not exist") from exc
    except Exception as exc:
        raise VideoError(uri, f"cannot read it: {exc}") from exc


def open_container(uri: str, filesystem: Any = None, timeout: Optional[float] = 30.0):
    """Open a media file with PyAV (local path directly; remote as a streamed file object).

    Returns ``(container, closer)``; call ``closer()`` when done (closes both).
    """
    import av

    handle = None
    try:
        if not is_remote(uri) and filesystem is None:
            path = local_path(uri)
            if not os.path.exists(path):
                raise VideoError(uri, "does not exist")
            if os.path.isfile(path) and os.path.getsize(path) == 0:
                raise VideoError(uri, "is empty (0 bytes)")
            container = av.open(path, "r", timeout=timeout)
        else:
            fs, path = resolve_fs(uri, filesystem)
            handle = fs.open_input_file(path)
            if handle.size() == 0:
                raise VideoError(uri, "is empty (0 bytes)")
            container = av.open(handle, "r", buffer_size=REMOTE_BLOCK, timeout=timeout)
    except VideoError:
        if handle is not None:
            handle.close()
        raise
    except FileNotFoundError as exc:
        raise VideoError(uri, "does not exist") from exc
    except Exception as exc:
        if handle is not None:
            handle.close()
        raise VideoError(uri, f"is not a readable video ({type(exc).__name__}: {exc}); "
                              "check that the file is complete and in a format FFmpeg reads") from exc

    def closer() -> None:
        container.close()
        if handle is not None:
            handle.close()

    return container, closer
