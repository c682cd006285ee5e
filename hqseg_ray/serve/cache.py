"""A dict bounded in bytes (LRU eviction), in count, and by idle time (TTL).

Used for the image embedding cache and the video sessions of the online endpoint. Not thread-safe
by itself: the ingress runs it on one event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

from hqseg_ray.serve.errors import PayloadTooLarge

V = TypeVar("V")


class TooLarge(PayloadTooLarge):
    """The item alone is larger than the cache's byte bound."""


@dataclass
class _Entry(Generic[V]):
    value: V
    nbytes: int
    last_used: float


class BoundedCache(Generic[V]):
    """LRU map ``key -> value`` with a total-bytes bound, an optional count bound and an idle TTL.

    Args:
        max_bytes: total ``nbytes`` of all values; putting past it evicts least recently used.
        ttl_s: a value not touched (``get`` / ``put``) for this many seconds is gone.
        max_items: most values (None: unbounded count).
        clock: seconds, monotonic (injectable for tests).
        on_evict: called with (key, value, reason) for every value that leaves the cache other than
            by ``pop``; reason is "bytes", "count" or "ttl".
    """

    def __init__(self, max_bytes: int, ttl_s: float, max_items: Optional[int] = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_evict: Optional[Callable[[str, Any, str], None]] = None) -> None:
        self.max_bytes = int(max_bytes)
        self.ttl_s = float(ttl_s)
        self.max_items = max_items
        self._clock = clock
        self._on_evict = on_evict
        self._items: "OrderedDict[str, _Entry[V]]" = OrderedDict()
        self.nbytes = 0
        self.stats = {"hits": 0, "misses": 0, "evicted_bytes": 0, "evicted_count": 0, "evicted_ttl": 0}

    def __len__(self) -> int:
        self.expire()
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        self.expire()
        return key in self._items

    def keys(self) -> Iterator[str]:
        self.expire()
        return iter(list(self._items))

    def _drop(self, key: str, reason: str) -> None:
        entry = self._items.pop(key)
        self.nbytes -= entry.nbytes
        self.stats[f"evicted_{reason}"] += 1
        if self._on_evict is not None:
            self._on_evict(key, entry.value, reason)

    def expire(self) -> None:
        """Drop every value idle for longer than the TTL."""
        now = self._clock()
        while self._items:
            key, entry = next(iter(self._items.items()))
            if now - entry.last_used <= self.ttl_s:
                break
            self._drop(key, "ttl")

    def get(self, key: str) -> Optional[V]:
        """The value (and mark it used), or None when unknown or expired."""
        self.expire()
        entry = self._items.get(key)
        if entry is None:
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        entry.last_used = self._clock()
        self._items.move_to_end(key)
        return entry.value

    def put(self, key: str, value: V, nbytes: int) -> None:
        """Insert or replace; evicts least recently used values until the bounds hold."""
        if nbytes > self.max_bytes:
            raise TooLarge(f"{nbytes} bytes is more than the whole cache holds ({self.max_bytes} bytes)")
        self.expire()
        if key in self._items:
            self.nbytes -= self._items.pop(key).nbytes
        self._items[key] = _Entry(value, int(nbytes), self._clock())
        self.nbytes += int(nbytes)
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._items)), "bytes")
        while self.max_items is not None and len(self._items) > self.max_items:
            self._drop(next(iter(self._items)), "count")

    def resize(self, key: str, nbytes: int) -> None:
        """Update a value's size (it grew) and evict *other* values until the bound holds."""
        entry = self._items.get(key)
        if entry is None:
            return
        if nbytes > self.max_bytes:
            raise TooLarge(f"{nbytes} bytes is more than the whole cache holds ({self.max_bytes} bytes)")
        self.nbytes += int(nbytes) - entry.nbytes
        entry.nbytes = int(nbytes)
        entry.last_used = self._clock()
        self._items.move_to_end(key)
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._items)), "bytes")

    def would_fit_count(self) -> bool:
        self.expire()
        return self.max_items is None or len(self._items) < self.max_items

    def pop(self, key: str) -> Optional[V]:
        entry = self._items.pop(key, None)
        if entry is None:
            return None
        self.nbytes -= entry.nbytes
        return entry.value
