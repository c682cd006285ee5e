"""The output lock: one job per output location, owner and times in the refusal, stale locks expire."""

import json
import subprocess
import sys
import time

import pytest

from hqseg_ray.pipeline.lock import LOCK_KEY, OutputLock, OutputLockedError
from hqseg_ray.storage import open_store
from tests.s3 import s3_server  # noqa: F401 -- fixture


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "out"))
    s3 = request.getfixturevalue("s3_server")
    return open_store(s3.url(s3.prefix()))


def test_second_job_refuses_with_owner_and_time(store):
    with OutputLock(store, "job-a", ttl_s=60) as first:
        with pytest.raises(OutputLockedError, match=r"in use by another job: owner .*:\d+, job job-a, started 20"):
            OutputLock(store, "job-b", ttl_s=60).acquire()
        assert json.loads(store.read_bytes(LOCK_KEY))["token"] == first.token  # the refusal left it alone
    assert not store.exists(LOCK_KEY)
    with OutputLock(store, "job-c", ttl_s=60):  # free again after release
        pass


def test_stale_lock_expires(store):
    old = {"owner": "elsewhere:1", "job_id": "gone", "token": "x", "started_at": "2020-01-01T00:00:00+00:00",
           "heartbeat_at": time.time() - 120, "ttl_s": 60}
    store.write_bytes(LOCK_KEY, json.dumps(old).encode())
    with OutputLock(store, "job-new", ttl_s=60) as lock:
        assert json.loads(store.read_bytes(LOCK_KEY))["token"] == lock.token


def test_lock_of_a_dead_process_on_this_host_is_stale(tmp_path):
    store = open_store(str(tmp_path / "out"))
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = OutputLock(store, "killed", ttl_s=3600)
    dead.owner = dead.owner.rsplit(":", 1)[0] + ":" + proc.stdout.strip()
    store.create_exclusive(LOCK_KEY, dead._body())
    with OutputLock(store, "rerun", ttl_s=3600):
        pass


def test_heartbeat_keeps_the_lock_fresh(tmp_path):
    store = open_store(str(tmp_path / "out"))
    with OutputLock(store, "job", ttl_s=5):  # heartbeat every 1 s
        first = json.loads(store.read_bytes(LOCK_KEY))["heartbeat_at"]
        time.sleep(2.5)
        assert json.loads(store.read_bytes(LOCK_KEY))["heartbeat_at"] > first
        with pytest.raises(OutputLockedError):
            OutputLock(store, "other", ttl_s=5).acquire()
