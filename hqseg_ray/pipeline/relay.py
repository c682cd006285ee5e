"""Relay of tracker states between the chunks of one video.

With ``stitch.mechanism: relay`` chunk k+1 starts from chunk k's last-frame object states, so an
object prompted only on frame 0 keeps its id to the end of the video. Segment actors encode a
chunk's frames *before* asking for the states (encoding is ~all of the GPU time), so chunks of
one video still encode in parallel and only the cheap decoder-side tracking runs in order.

The store is one async Ray actor per job: ``put`` is idempotent (a retried chunk puts the same
states again) and ``get`` waits on an asyncio event, so thousands of waiting chunks cost no
threads. Chunks are dispatched in order (``preserve_order``; one chunk in flight per actor), so
the chunk a waiter needs has always been dispatched already and can never queue behind it.
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
        self.waited_s = 0.0
        self.gets = 0

    def _event(self, key: tuple[str, int]) -> asyncio.Event:
        if key not in self._events:
            self._events[key] = asyncio.Event()
        return self._events[key]

    async def put(self, video_id: str, chunk_index: int, states: Any) -> None:
        key = (video_id, int(chunk_index))
        self._values[key] = states
        self._event(key).set()

    async def get(self, video_id: str, chunk_index: int, timeout_s: float) -> tuple[bool, Any]:
        """-> (found, states). Waits up to ``timeout_s`` for the put."""
        key = (video_id, int(chunk_index))
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(self._event(key).wait(), timeout=timeout_s)
        except asyncio.TimeoutError:
            return False, None
        finally:
            self.waited_s += time.monotonic() - t0
            self.gets += 1
        # entries stay until the video is written (forget_video): a retried chunk gets them again
        return True, self._values.get(key)

    async def forget_video(self, video_id: str) -> None:
        for key in [k for k in self._values if k[0] == video_id]:
            self._values.pop(key, None)
            self._events.pop(key, None)

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
    """Segment-actor side handle; resolves the named actor lazily."""

    def __init__(self, job_id: Optional[str], timeout_s: float):
        self.job_id = job_id
        self.timeout_s = timeout_s
        self._actor = None

    def _handle(self):
        import ray

        if self._actor is None:
            self._actor = ray.get_actor(relay_actor_name(self.job_id))
        return self._actor

    def put(self, video_id: str, chunk_index: int, states: Any) -> None:
        import ray

        if self.job_id is None:
            return
        ray.get(self._handle().put.remote(video_id, chunk_index, states))

    def get(self, video_id: str, chunk_index: int) -> tuple[bool, Any]:
        import ray

        if self.job_id is None:
            return False, None
        return ray.get(self._handle().get.remote(video_id, chunk_index, self.timeout_s))
