"""Relay of tracker states between the chunks of one video.

With ``stitch.mechanism: relay`` chunk k+1 starts from chunk k's last-frame object states, so an
object prompted only on frame 0 keeps its id to the end of the video. Segment actors encode a
chunk's frames *before* asking for the states (encoding is ~all of the GPU time), so chunks of
one video still encode in parallel and only the cheap decoder-side tracking runs in order.

The store is one async Ray actor per job: ``put`` is idempotent (a retried chunk puts the same
states again) and ``get`` waits on an asyncio event, so thousands of waiting chunks cost no
threads. Chunks are dispatched in order (``preserve_order``; one chunk in flight per actor), so
the chunk a waiter needs has always been dispatched already and can never queue behind it.

The wait is progress-aware, not a fixed timeout: the actor working on a chunk reports it
(``started``, then a ``beat`` every few seconds from a background thread, then ``put``), and a
waiter keeps waiting as long as its predecessor shows a sign of progress at least every
``compute.relay_stall_s`` seconds. It gives up when the predecessor is known to have failed
(``FAILED`` was put), or has been silent that long (its actor died and no retry picked it up, or it
never started); ``compute.relay_timeout_s``, when set, is an absolute cap. A carry given up on is
reported with the chunk (``carry_dropped``) and lands in ``videos.parquet`` (``dropped_carries``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

logger = logging.getLogger(__name__)


class RelayStore:
    """Async actor holding ``(video_id, chunk_index) -> carried states``."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, int], Any] = {}
        self._events: dict[tuple[str, int], asyncio.Event] = {}
        self._progress: dict[tuple[str, int], float] = {}  # last sign of life of the chunk's worker
        self.waited_s = 0.0
        self.gets = 0

    def _event(self, key: tuple[str, int]) -> asyncio.Event:
        if key not in self._events:
            self._events[key] = asyncio.Event()
        return self._events[key]

    async def beat(self, video_id: str, chunk_index: int) -> None:
        """The worker of this chunk is alive and on it (called when it starts, then periodically)."""
        self._progress[(video_id, int(chunk_index))] = time.monotonic()

    async def put(self, video_id: str, chunk_index: int, states: Any) -> None:
        key = (video_id, int(chunk_index))
        self._values[key] = states
        self._progress[key] = time.monotonic()
        self._event(key).set()

    async def get(self, video_id: str, chunk_index: int, stall_s: float,
                  timeout_s: Optional[float] = None, poll_s: float = 1.0) -> tuple[bool, Any, str]:
        """-> (found, states, why not). Waits while chunk ``chunk_index`` shows progress at least
        every ``stall_s`` seconds (``beat``/``put``; a chunk not yet started counts from the call),
        and at most ``timeout_s`` in all when given."""
        key = (video_id, int(chunk_index))
        t0 = time.monotonic()
        why = ""
        try:
            while True:
                try:
                    await asyncio.wait_for(self._event(key).wait(), timeout=poll_s)
                    break
                except asyncio.TimeoutError:
                    now = time.monotonic()
                    last = max(self._progress.get(key, t0), t0)
                    if now - last > stall_s:
                        started = key in self._progress
                        why = (f"chunk {chunk_index} showed no progress for {now - last:.0f} s "
                               f"(compute.relay_stall_s={stall_s:g}; "
                               f"{'its worker stopped reporting' if started else 'it never started'})")
                        return False, None, why
                    if timeout_s is not None and now - t0 > timeout_s:
                        why = f"waited {now - t0:.0f} s for chunk {chunk_index} (compute.relay_timeout_s)"
                        return False, None, why
        finally:
            self.waited_s += time.monotonic() - t0
            self.gets += 1
        # entries stay until the video is written (forget_video): a retried chunk gets them again
        return True, self._values.get(key), ""

    async def forget_video(self, video_id: str) -> None:
        for key in [k for k in set(self._values) | set(self._progress) if k[0] == video_id]:
            self._values.pop(key, None)
            self._events.pop(key, None)
            self._progress.pop(key, None)

    async def stats(self) -> dict:
        return {"entries": len(self._values), "waited_s": self.waited_s, "gets": self.gets}


def relay_actor_name(job_id: str) -> str:
    return f"hqseg-relay-{job_id}"


def start_relay(job_id: str):
    """Create the job's relay store (driver side)."""
    import ray

    cls = ray.remote(num_cpus=0, max_concurrency=10_000, max_restarts=-1)(RelayStore)
    return cls.options(name=relay_actor_name(job_id), lifetime=None).remote()


class RelayClient:
    """Segment-actor side handle; resolves the named actor lazily.

    ``working_on(video_id, chunk_index)`` starts reporting progress on a chunk (a daemon thread
    beats every ``heartbeat_s``) until ``done()``; ``get`` waits progress-aware (see module doc).
    """

    def __init__(self, job_id: Optional[str], stall_s: float, timeout_s: Optional[float] = None,
                 heartbeat_s: Optional[float] = None):
        self.job_id = job_id
        self.stall_s = float(stall_s)
        self.timeout_s = timeout_s
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else max(0.5, min(10.0, self.stall_s / 6))
        self._actor = None
        self._current: Optional[tuple[str, int]] = None
        self._thread = None
        self._wake = None

    def _handle(self):
        import ray

        if self._actor is None:
            self._actor = ray.get_actor(relay_actor_name(self.job_id))
        return self._actor

    def working_on(self, video_id: str, chunk_index: int) -> None:
        if self.job_id is None:
            return
        import threading

        self._current = (video_id, int(chunk_index))
        self._handle().beat.remote(video_id, int(chunk_index))
        if self._thread is None:
            self._wake = threading.Event()
            self._thread = threading.Thread(target=self._beat_loop, name="relay-heartbeat", daemon=True)
            self._thread.start()

    def done(self) -> None:
        self._current = None

    def _beat_loop(self) -> None:
        while True:
            self._wake.wait(self.heartbeat_s)
            cur = self._current
            if cur is not None:
                try:
                    self._handle().beat.remote(*cur)
                except Exception as exc:  # noqa: BLE001 -- a missed beat only shortens a waiter's patience
                    logger.debug("relay heartbeat failed: %s", exc)

    def put(self, video_id: str, chunk_index: int, states: Any) -> None:
        import ray

        if self.job_id is None:
            return
        ray.get(self._handle().put.remote(video_id, chunk_index, states))

    def get(self, video_id: str, chunk_index: int) -> tuple[bool, Any, str]:
        """-> (found, states, why not found)."""
        import ray

        if self.job_id is None:
            return False, None, "no relay"
        return ray.get(self._handle().get.remote(video_id, chunk_index, self.stall_s, self.timeout_s))
