"""Full-resolution masks of the kept (frame, object)s, made once each, off the tracker's critical path.

The tracker decides everything on its work grid (``LowResGeometry.work_size``); what it writes out
is COCO RLE at the original frame size. :class:`FullResWriter` makes those masks from the kept
predictions' low-res logits -- upsampled as ``SegEngine.postprocess`` does, cut to the same
clip box, with the same pixels given back (carve) and shared out by the highest logit
(``non_overlap``) as on the work grid -- and encodes them, on a bounded thread pool, while the
tracker goes on with the next frame. OpenCV's resize and most numpy work release the GIL, so on
an actor the pool overlaps the tracker's Python and the accelerator's waits.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from hqseg_ray.masks import rle_encode_many
from hqseg_ray.track.motion import LowResGeometry, clip_mask, keep_highest

DEFAULT_THREADS = 2


class PendingRle:
    """One object's RLE from a frame job still running: ``result()`` waits for it."""

    __slots__ = ("_future", "_key")

    def __init__(self, future: Future, key: int):
        self._future, self._key = future, key

    def result(self) -> dict:
        return self._future.result()[self._key]


def resolve(rle):
    """A RLE dict from a dict, a :class:`PendingRle` (waits for it) or None (dicts and None pass through)."""
    return rle.result() if hasattr(rle, "result") else rle


@dataclass
class FrameJob:
    """The kept predictions of one frame (``n`` of them, job order).

    Attributes:
        keys: ``[n]`` id of each (the track id); ``emit``: ``[n]`` whether its RLE is wanted
            (the others only take part in carving / sharing out).
        logits: ``[n, lh, lw]`` float32 low-res logits as decoded (not cut to the box).
        clip_boxes: ``[n]`` XYXY original-pixel box the mask is cut to, or None.
        carve: ``(hi, lo)`` positions: ``hi`` gives ``lo``'s pixels back.
        share: pixels in several masks go to the highest logit there.
    """

    keys: list[int]
    emit: list[bool]
    logits: np.ndarray
    clip_boxes: list
    carve: list
    share: bool


def frame_masks(geo: LowResGeometry, job: FrameJob) -> np.ndarray:
    """``[n, H, W]`` bool full-resolution masks of a :class:`FrameJob` (see the module docstring)."""
    n = len(job.keys)
    h, w = geo.original_size
    masks = np.zeros((n, h, w), bool)
    keep_logits = job.share and n > 1
    full = np.empty((n, h, w), np.float32) if keep_logits else None
    for i in range(n):
        lg = geo.full_logits(job.logits[i:i + 1])[0]
        m = lg > 0
        box = job.clip_boxes[i]
        masks[i] = m if box is None else clip_mask(m, box)
        if keep_logits:
            full[i] = lg
    for hi, lo in job.carve:
        masks[hi] &= ~masks[lo]
    if keep_logits:
        many = masks.sum(0, dtype=np.uint16) > 1
        if many.any():
            masks[:, many] = keep_highest(masks[:, many], full[:, many])
    return masks


def frame_rles(geo: LowResGeometry, job: FrameJob) -> dict[int, dict]:
    """``{key: RLE}`` of the emitted masks of a :class:`FrameJob`."""
    masks = frame_masks(geo, job)
    sel = [i for i in range(len(job.keys)) if job.emit[i]]
    if not sel:
        return {}
    return dict(zip([job.keys[i] for i in sel], rle_encode_many(masks[sel])))


class FullResWriter:
    """Runs :func:`frame_rles` for each submitted frame on ``threads`` threads (0: at once, in the
    caller), at most ``2 * threads`` frames in flight (submit blocks beyond that: bounded memory)."""

    def __init__(self, geo: LowResGeometry, threads: int = DEFAULT_THREADS):
        self.geo = geo
        self.threads = max(0, int(threads))
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="hqseg-rle") if self.threads else None
        self._slots = threading.BoundedSemaphore(2 * self.threads) if self.threads else None

    def submit(self, job: FrameJob) -> dict[int, PendingRle]:
        """Start one frame's job; returns ``{key: PendingRle}`` for its emitted keys."""
        if self._pool is None:
            fut: Future = Future()
            try:
                fut.set_result(frame_rles(self.geo, job))
            except BaseException as exc:  # noqa: BLE001 -- handed to whoever reads the result
                fut.set_exception(exc)
        else:
            self._slots.acquire()
            fut = self._pool.submit(frame_rles, self.geo, job)
            fut.add_done_callback(lambda _f: self._slots.release())
        return {k: PendingRle(fut, k) for k, e in zip(job.keys, job.emit) if e}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def frame_job(keys: Sequence[int], emit: Sequence[bool], logits, clip_boxes: Sequence[Optional[np.ndarray]],
              carve: Sequence[tuple[int, int]], share: bool) -> FrameJob:
    return FrameJob(list(keys), list(emit), np.ascontiguousarray(np.asarray(logits, np.float32)), list(clip_boxes),
                    list(carve), bool(share))
