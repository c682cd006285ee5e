"""Every byte a job writes goes through here: one small layer over ``pyarrow.fs``.

An output location is a :class:`Store` (``open_store(uri)``): a local path, ``file://``,
``s3://``, ``gs://``, any scheme ``pyarrow.fs.FileSystem.from_uri`` knows, and, through
``fsspec`` (``pyarrow.fs.FSSpecHandler``), any scheme an installed fsspec implementation knows.
Keys are ``/``-separated paths relative to the store's root (``masks/video_id=a/part-0.parquet``).

Writes are atomic where the store allows it:

* local: a hidden temporary file in the same folder (``.<name>.<random>.tmp``), ``fsync``, rename
  over the final name, ``fsync`` of the folder: a reader sees the old file or the new one, never a
  part, and a crash leaves at most a hidden temporary file (readers skip dot-files);
* object stores (S3, GCS, ...): the final key is written in one request (one PUT, or a multipart
  upload that becomes visible only when completed) from a buffer already complete in memory or on
  local disk; no temporary objects are ever created, because an object store has no atomic rename.

Credentials and endpoints come from the usual places of each store: for S3 the environment
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` for S3-compatible servers such as MinIO), ``~/.aws`` profiles or the
instance role; for GCS the application-default credentials.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from typing import IO, Any, Iterator, Optional

_LOCAL_SCHEMES = ("", "file")


class StorageError(OSError):
    """An output location that cannot be reached, read or written; names the location."""


def scheme_of(uri: str) -> str:
    uri = str(uri)
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def is_local_uri(uri: str) -> bool:
    """True for a plain path or ``file://`` (the disk of the machine that writes)."""
    return scheme_of(uri) in _LOCAL_SCHEMES


def resolve(uri: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path inside it)`` for any supported URI or local path."""
    import pyarrow.fs as pafs

    uri = str(uri)
    scheme = scheme_of(uri)
    if scheme in _LOCAL_SCHEMES:
        path = uri[len("file://"):] if scheme == "file" else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    if scheme == "s3" and "allow_delayed_open" not in uri:
        # a stream that is closed before its first part fills is sent as one PutObject, not as a
        # multipart upload of one part (nothing is left behind by a writer killed mid-file)
        uri += ("&" if "?" in uri else "?") + "allow_delayed_open=true"
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as native_exc:  # noqa: BLE001 -- a scheme pyarrow lacks: try fsspec
        try:
            import fsspec

            fs, path = fsspec.core.url_to_fs(uri)
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"output location {uri!r}: no filesystem for it ({native_exc}; fsspec: {exc})") from exc
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path.rstrip("/")


@dataclass
class Entry:
    """One child of a listed folder."""

    name: str
    is_dir: bool
    size: Optional[int] = None


class Store:
    """An output location (a folder or key prefix) and its filesystem.

    Args:
        uri: the location as the user wrote it (``out``, ``file:///data/out``, ``s3://b/prefix``).
        filesystem: an already built ``pyarrow.fs.FileSystem`` whose path is ``uri`` (tests).
    """

    def __init__(self, uri: str, filesystem: Any = None) -> None:
        import pyarrow.fs as pafs

        self.uri = str(uri).rstrip("/") or str(uri)
        if filesystem is not None:
            self.fs, self.base = filesystem, self.uri.split("://", 1)[-1]
        else:
            self.fs, self.base = resolve(self.uri)
        self.base = self.base.rstrip("/") or "/"
        fs = self.fs
        while isinstance(fs, pafs.SubTreeFileSystem):
            fs = fs.base_fs
        self.local = isinstance(fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # -- names ---------------------------------------------------------------------------------
    def path(self, key: str = "") -> str:
        """Path of ``key`` inside the filesystem."""
        key = str(key).strip("/")
        return f"{self.base}/{key}" if key else self.base

    def url(self, key: str = "") -> str:
        """``key`` as a URI a user (or :func:`open_store`) can use."""
        key = str(key).strip("/")
        return f"{self.uri}/{key}" if key else self.uri

    def sub(self, key: str) -> "Store":
        """The store rooted at the folder ``key`` (same filesystem)."""
        out = object.__new__(Store)
        out.fs, out.local, out.uri, out.base = self.fs, self.local, self.url(key), self.path(key)
        return out

    # -- writes --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[IO[bytes]]:
        """A binary file to fill; on a clean exit it becomes ``key`` atomically, on an exception
        nothing appears under ``key``."""
        path = self.path(key)
        if self.local:
            folder = os.path.dirname(path)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    yield f
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                _fsync_dir(folder)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
                raise
            return
        buf = io.BytesIO()
        yield buf
        self._put(path, buf.getbuffer())

    def _put(self, path: str, data) -> None:
        """One request per object (pyarrow uploads small streams with one PutObject and large
        ones as a multipart upload that only becomes visible when completed)."""
        try:
            with self.fs.open_output_stream(path) as out:
                out.write(data)
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"cannot write {self.url(path[len(self.base):])!r}: {exc}") from exc

    def write_bytes(self, key: str, data: bytes) -> str:
        with self.writer(key) as f:
            f.write(data)
        return self.url(key)

    def write_table(self, key: str, table, **parquet_kwargs) -> str:
        """A pyarrow Table as one Parquet file, atomically."""
        import pyarrow.parquet as pq

        with self.writer(key) as f:
            pq.write_table(table, f, **parquet_kwargs)
        return self.url(key)

    def upload_file(self, key: str, local_file: str) -> str:
        """Copy a finished local file (e.g. an MP4 an encoder wrote) to ``key``, atomically;
        object stores stream it (multipart, visible only when complete)."""
        if self.local:
            with self.writer(key) as f, open(local_file, "rb") as src:
                shutil.copyfileobj(src, f, 4 << 20)
            return self.url(key)
        path = self.path(key)
        try:
            with open(local_file, "rb") as src, self.fs.open_output_stream(path) as out:
                while True:
                    block = src.read(8 << 20)
                    if not block:
                        break
                    out.write(block)
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"cannot write {self.url(key)!r}: {exc}") from exc
        return self.url(key)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if it does not exist; False when it does. Atomic on a local disk
        (``O_EXCL``); on object stores without conditional writes in pyarrow it is a check then a
        PUT (callers confirm by reading back, see ``pipeline/lock.py``)."""
        if self.local:
            path = self.path(key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(os.path.dirname(path))
            return True
        if self.exists(key):
            return False
        self._put(self.path(key), data)
        return True

    def makedirs(self, key: str = "") -> None:
        """Create a folder on a local disk; nothing on object stores (keys need no folders, and
        pyarrow would create zero-byte marker objects)."""
        if self.local:
            os.makedirs(self.path(key), exist_ok=True)

    def delete(self, key: str) -> bool:
        """Remove one file/object; False when it was not there. (On S3 pyarrow then keeps the
        folder as a zero-byte ``folder/`` marker object when it was the folder's last object.)"""
        try:
            self.fs.delete_file(self.path(key))
            return True
        except FileNotFoundError:
            return False

    def delete_dir(self, key: str) -> None:
        import pyarrow.fs as pafs

        if self.info(key) is not None and self.fs.get_file_info(self.path(key)).type == pafs.FileType.Directory:
            self.fs.delete_dir(self.path(key))

    # -- reads ---------------------------------------------------------------------------------
    def info(self, key: str = ""):
        """pyarrow ``FileInfo`` of ``key`` (``size``, ``mtime``, ``type``); None when absent."""
        import pyarrow.fs as pafs

        try:
            info = self.fs.get_file_info(self.path(key))
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"cannot reach {self.url(key)!r}: {exc}") from exc
        return None if info.type == pafs.FileType.NotFound else info

    def exists(self, key: str) -> bool:
        return self.info(key) is not None

    def read_bytes(self, key: str) -> bytes:
        with self.fs.open_input_stream(self.path(key)) as f:
            return f.read()

    def read_table(self, key: str, columns=None):
        import pyarrow.parquet as pq

        return pq.read_table(self.path(key), columns=columns, filesystem=self.fs)

    def read_schema(self, key: str):
        import pyarrow.parquet as pq

        with self.fs.open_input_file(self.path(key)) as f:
            return pq.read_schema(f)

    def list(self, key: str = "") -> list[Entry]:
        """Children of a folder / prefix, sorted by name ([] when it does not exist)."""
        import pyarrow.fs as pafs

        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.path(key), allow_not_found=True))
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"cannot list {self.url(key)!r}: {exc}") from exc
        out = [Entry(i.base_name, i.type == pafs.FileType.Directory, i.size) for i in infos]
        return sorted(out, key=lambda e: e.name)

    # -- checks --------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Create, read back and delete a probe object under the root; raises StorageError naming
        the location and the failing step. A local folder that does not exist yet is not created:
        the probe goes to its nearest existing parent folder (where the job will create it)."""
        if self.local and not os.path.isdir(self.base):
            parent = self.base
            while not os.path.isdir(parent) and os.path.dirname(parent) != parent:
                if os.path.exists(parent):
                    raise StorageError(f"output location {self.uri!r} is not writable: {parent!r} is a file")
                parent = os.path.dirname(parent)
            try:
                Store(parent).check_writable()
            except StorageError as exc:
                raise StorageError(f"output location {self.uri!r} cannot be created: {exc}") from exc
            return
        key = f"_hqseg_probe_{uuid.uuid4().hex[:12]}"
        step = "write"
        try:
            self.write_bytes(key, b"hqseg write probe\n")
            step = "read back"
            if self.read_bytes(key) != b"hqseg write probe\n":
                raise StorageError("the probe read back differs from what was written")
            step = "delete"
            self.delete(key)
        except Exception as exc:  # noqa: BLE001
            raise StorageError(f"output location {self.uri!r} is not writable ({step} of a probe object "
                               f"{key!r} failed: {exc}); check the path, bucket and credentials") from exc


def open_store(uri: str, filesystem: Any = None) -> Store:
    """The :class:`Store` of an output location (see the module docstring for what is accepted)."""
    return Store(uri, filesystem)


def split_uri(uri: str) -> tuple[Store, str]:
    """``(store of the parent folder, file name)`` of a file URI or path."""
    uri = str(uri)
    parent, _, name = uri.rstrip("/").rpartition("/")
    return Store(parent or "."), name


def _fsync_dir(folder: str) -> None:
    """Make a rename durable: fsync the folder that holds the renamed file."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a folder; the rename itself is still atomic
        pass
    finally:
        os.close(fd)
