"""One job at a time per output location: ``OUTPUT/_hqseg.lock``.

The lock is a small JSON object (``owner`` host:pid, ``job_id``, ``started_at``,
``heartbeat_at``, ``ttl_s``) that the running driver rewrites every ``ttl_s / 5`` seconds. A
second job into the same output refuses with a message naming the owner and the times. A lock
is stale, and taken over with a warning, when its heartbeat is older than its ``ttl_s`` (a
driver killed on another machine), or at once when its owner is a process of this host that no
longer runs (a driver killed here).

On a local disk the lock is created with ``O_EXCL`` (atomic). pyarrow offers no conditional PUT
for object stores, so there the lock is written, then read back after ``CONFIRM_S``: of two jobs
racing for a free lock, the one whose write came last wins and the other refuses. Taking over a
stale lock is confirmed the same way on every store.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Optional

from hqseg_ray.storage import Store

logger = logging.getLogger(__name__)

LOCK_KEY = "_hqseg.lock"
CONFIRM_S = 1.0


class OutputLockedError(RuntimeError):
    """Another job writes into the same output location."""


def _now_iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """Context manager: hold the output's lock for the duration of a job."""

    def __init__(self, store: Store, job_id: str, ttl_s: float = 300.0) -> None:
        self.store, self.job_id, self.ttl_s = store, job_id, float(ttl_s)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.token = uuid.uuid4().hex
        self.started = time.time()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps({"owner": self.owner, "job_id": self.job_id, "token": self.token,
                           "started_at": _now_iso(self.started), "heartbeat_at": now,
                           "heartbeat_at_iso": _now_iso(now), "ttl_s": self.ttl_s}).encode()

    def read(self) -> Optional[dict]:
        """The lock's content; None when there is none, ``{}`` when it is unreadable."""
        try:
            return json.loads(self.store.read_bytes(LOCK_KEY))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {} if self.store.exists(LOCK_KEY) else None

    def stale_reason(self, lock: dict) -> Optional[str]:
        """Why an existing lock may be taken over, or None when its owner is alive."""
        if not lock:
            return "the lock object is unreadable"
        age = time.time() - float(lock.get("heartbeat_at") or 0)
        if age > float(lock.get("ttl_s") or self.ttl_s):
            return f"its last heartbeat was {age:.0f} s ago (ttl {float(lock.get('ttl_s') or self.ttl_s):.0f} s)"
        host, _, pid = str(lock.get("owner", "")).rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
            return f"its owner process {pid} no longer runs on this host"
        return None

    def _refuse(self, lock: dict) -> OutputLockedError:
        return OutputLockedError(
            f"output {self.store.uri!r} is in use by another job: owner {lock.get('owner')}, job "
            f"{lock.get('job_id')}, started {lock.get('started_at')}, last heartbeat "
            f"{lock.get('heartbeat_at_iso')} (the lock expires {float(lock.get('ttl_s') or self.ttl_s):.0f} s after "
            f"its last heartbeat). Wait for it to finish, use another output.path, or, if that job is "
            f"gone, delete {self.store.url(LOCK_KEY)!r}")

    def acquire(self) -> None:
        confirm = not self.store.local  # no conditional PUT on object stores
        if not self.store.create_exclusive(LOCK_KEY, self._body()):
            confirm = True  # taking over is a read then a write, on any store
            lock = self.read()
            if lock is not None:
                reason = self.stale_reason(lock)
                if reason is None:
                    raise self._refuse(lock)
                logger.warning("output %r: taking over a stale lock of %s (%s)", self.store.uri,
                               lock.get("owner"), reason)
            self.store.write_bytes(LOCK_KEY, self._body())
        if confirm:  # our write must be the one that stayed
            time.sleep(CONFIRM_S)
            lock = self.read() or {}
            if lock.get("token") != self.token:
                raise self._refuse(lock)
        self._thread = threading.Thread(target=self._heartbeat, name="hqseg-lock", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(max(1.0, self.ttl_s / 5)):
            try:
                lock = self.read() or {}
                if lock.get("token") not in (None, self.token):
                    logger.error("output %r: the lock was taken by %s", self.store.uri, lock.get("owner"))
                    return
                self.store.write_bytes(LOCK_KEY, self._body())
            except Exception as exc:  # noqa: BLE001 -- a missed heartbeat is retried, the job goes on
                logger.warning("output %r: lock heartbeat failed: %s", self.store.uri, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            if (self.read() or {}).get("token") == self.token:
                self.store.delete(LOCK_KEY)
        except Exception as exc:  # noqa: BLE001
            logger.warning("output %r: could not remove the lock: %s", self.store.uri, exc)

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
