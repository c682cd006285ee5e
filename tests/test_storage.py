"""The storage module on a local disk, file://, fsspec (memory://) and a real S3 server (moto)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pytest

from hqseg_ray.storage import StorageError, open_store
from tests.s3 import s3_server  # noqa: F401 -- fixture


def _roundtrip(store):
    assert store.write_bytes("a/b.txt", b"hello").endswith("/a/b.txt")
    assert store.read_bytes("a/b.txt") == b"hello"
    store.write_table("t.parquet", pa.table({"x": [1, 2]}))
    assert store.read_table("t.parquet").column("x").to_pylist() == [1, 2]
    assert [(e.name, e.is_dir) for e in store.list()] == [("a", True), ("t.parquet", False)]
    assert store.exists("a/b.txt") and not store.exists("a/c.txt")
    with pytest.raises(RuntimeError):
        with store.writer("a/broken.txt") as f:
            f.write(b"half")
            raise RuntimeError("killed mid-write")
    assert [e.name for e in store.list("a")] == ["b.txt"]   # nothing under the final name, no temp file
    assert store.delete("a/b.txt") and not store.exists("a/b.txt")


def test_local_path_and_file_uri(tmp_path):
    store = open_store(str(tmp_path / "out"))
    assert store.local
    _roundtrip(store)
    other = open_store(f"file://{tmp_path}/out")
    assert other.local and other.read_table("t.parquet").num_rows == 2
    assert sorted(os.listdir(tmp_path / "out")) == ["a", "t.parquet"]


def test_fsspec_backed_scheme():
    store = open_store("memory://hqseg-test/out")
    assert not store.local
    _roundtrip(store)


def test_s3(s3_server):
    prefix = s3_server.prefix()
    store = open_store(s3_server.url(prefix))
    assert not store.local
    _roundtrip(store)
    # no temporary objects (pyarrow leaves a zero-byte folder marker "a/" after deleting a folder's last object)
    assert s3_server.keys(prefix) == [f"{prefix}/a/", f"{prefix}/t.parquet"]
    assert s3_server.uploads(prefix) == []


def test_check_writable_creates_and_deletes_a_probe(s3_server, tmp_path):
    prefix = s3_server.prefix()
    open_store(s3_server.url(prefix)).check_writable()
    assert [k for k in s3_server.keys(prefix) if not k.endswith("/")] == []
    open_store(str(tmp_path / "new" / "out")).check_writable()
    assert not (tmp_path / "new").exists()       # a folder to be created is probed in its parent, not made
    (tmp_path / "there").mkdir()
    open_store(str(tmp_path / "there")).check_writable()
    assert os.listdir(tmp_path / "there") == []
    with pytest.raises(StorageError, match="no-such-bucket.*not writable"):
        open_store("s3://no-such-bucket/x").check_writable()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: a read-only folder is writable")
        with pytest.raises(StorageError, match="not writable"):
            open_store(str(ro)).check_writable()
    finally:
        ro.chmod(0o700)


_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from hqseg_ray.export.parquet import write_video_parquet
    from hqseg_ray.track.types import FrameResult

    def frames():
        for t in range(100000):
            if t == 20000:
                print("mid-write", flush=True)
            if t > 20000:
                time.sleep(0.001)
            yield FrameResult(t, [1], [{"size": [4, 4], "counts": "04L0"}], [0.9], ["track"], 0, [0])

    write_video_parquet(frames(), sys.argv[1], "v")
""")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_killed_mid_write_leaves_no_partial_masks_file(where, s3_server, tmp_path):
    prefix = s3_server.prefix()
    out = str(tmp_path / "out") if where == "local" else s3_server.url(prefix)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, out], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "mid-write"
        time.sleep(0.5)  # row groups of the file are being written
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    store = open_store(out)
    assert not store.exists("masks/video_id=v/part-0.parquet")
    visible = [e.name for e in store.list("masks/video_id=v") if not e.name.startswith(".")]
    assert visible == []
    if where == "s3":
        assert s3_server.keys(prefix) == [] and s3_server.uploads(prefix) == []
