"""The one chunk-sequence driver: plan -> ``track_chunk`` with carry -> ``Stitcher``.

Every caller that turns a video into per-frame results goes through these pieces, so what a
chunk is given (relayed carry, overlap, original size) and how chunks become frames (ids reserved
for the user's objects, chunk order, pts) cannot drift between them:

* :func:`reserved_ids` -- the object ids of a video's prompts (new ids start above them);
* :func:`decode_chunk` -- one chunk's frames, decoded and resized to the model's input size frame
  by frame (never a full-resolution chunk in memory), with the engine's own resize rule;
* :func:`track_step` -- the per-chunk step: ``track_chunk`` (or a remote equivalent) with the
  previous chunk's carry when ``stitch.mechanism`` is ``relay``;
* :class:`VideoStitch` -- the per-video stitch step: chunk results in any order, pushed into one
  ``Stitcher`` in chunk order, frames out in frame order with their pts;
* :class:`ChunkSequence` -- the sequential driver built from them (``run`` / ``arun``).

Who uses what: ``segment_video`` and the tracking bench run ``ChunkSequence.run``; the Serve video
sessions ``ChunkSequence.arun`` (chunks tracked on an engine replica); the distributed bulk job
runs ``track_step`` on its segment actors (carry relayed between actors by the ``RelayStore``)
and ``VideoStitch`` in its writer actor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from hqseg_ray.track.stitch import Stitcher
from hqseg_ray.track.types import ChunkResult, FrameResult, as_tracking_config

TIMING_KEYS = ("encode_s", "decode_s", "flow_s", "discover_s")


def reserved_ids(prompts: Iterable[Any]) -> list[int]:
    """Sorted object ids given by a video's prompts (``PromptSpec`` or dicts); detector prompts
    (no ``object_id``) reserve nothing."""
    out = set()
    for p in prompts or ():
        oid = p.get("object_id") if isinstance(p, dict) else getattr(p, "object_id", None)
        if oid is not None:
            out.add(int(oid))
    return sorted(out)


def with_auto(config: Any, auto: bool) -> Any:
    """The ``TrackingConfig`` with automatic discovery switched on when the video asks for it (a
    manifest row with ``auto`` / without prompts): the tracker discovers, and the stitcher keeps
    the discovered tracks instead of dropping them as unmatched helpers."""
    cfg = as_tracking_config(config)
    if auto and not cfg.auto.enabled:
        cfg = cfg.model_copy(update={"auto": cfg.auto.model_copy(update={"enabled": True})})
    return cfg


def model_size(original: tuple[int, int], input_size: int) -> Optional[int]:
    """Long side frames travel at: the model's input size when the video is larger, else None (as is)."""
    return int(input_size) if max(original) > int(input_size) else None


def decode_chunk(video: str, start: int, stop: int, stride: int, info: Any, input_size: Optional[int],
                 filesystem: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames ``range(start, stop, stride)`` of ``video``, each resized as it is decoded.

    Args:
        video: URI of a video file, frame folder or image.
        start, stop, stride: the chunk's frames (``ChunkSpec`` fields).
        info: the video's ``VideoInfo`` (probe result).
        input_size: resize so the long side is this (the engine's resize rule, so frames equal
            what ``SegEngine`` would make of the full-size frame); None keeps the size.

    Returns:
        ``frames`` uint8 ``[N, h, w, 3]`` (long side <= ``input_size``), ``frame_indices`` int64
        ``[N]``, ``pts_times`` float64 ``[N]``. Memory: the resized chunk plus one full frame.

    Raises:
        VideoError: the range does not decode; ValueError: no frame decoded.
    """
    from hqseg_ray.model.engine import resize_longest_side
    from hqseg_ray.video import iter_frames

    n = len(range(start, stop, stride))
    frames: Optional[np.ndarray] = None
    idx, pts = np.zeros(n, np.int64), np.zeros(n, np.float64)
    k = 0
    for frame, i, t in iter_frames(video, start, stop, stride, info=info, filesystem=filesystem):
        small = resize_longest_side(frame, input_size) if input_size and max(frame.shape[:2]) > input_size else frame
        if frames is None:
            frames = np.empty((n,) + small.shape, np.uint8)
        frames[k], idx[k], pts[k] = small, i, t
        k += 1
    if frames is None or k == 0:
        raise ValueError(f"frames [{start}, {stop}) of video {video!r} decoded to nothing")
    return frames[:k], idx[:k], pts[:k]


def track_step(track: Callable[..., Any], frames, frame_indices, spec: Any, config: Any, carry: Optional[dict], *,
               video_id: Optional[str], original_size: Optional[tuple[int, int]], **extra) -> Any:
    """The per-chunk step: ``track(frames, frame_indices, prompts, config, carry_in=..., ...)``.

    ``track`` is ``track_chunk`` with its engine bound (``functools.partial(track_chunk, engine)``)
    or a remote equivalent of the same signature (a Serve handle's ``track_chunk.remote``: the
    return value is then whatever it returns, e.g. an awaitable). ``spec`` needs ``chunk_index``,
    ``overlap_next`` and ``prompts`` (a ``ChunkSpec``). ``carry`` is the previous chunk's
    ``carry_out``; it is passed only when ``config.stitch.mechanism`` is ``relay``. ``extra``
    (e.g. ``embeddings``) passes through.
    """
    cfg = as_tracking_config(config)
    relay = carry if cfg.stitch.mechanism == "relay" else None
    return track(frames, frame_indices, list(spec.prompts), cfg, carry_in=relay, chunk_index=int(spec.chunk_index),
                 video_id=video_id, overlap_next=int(spec.overlap_next), original_size=original_size, **extra)


@dataclass
class VideoStitch:
    """The per-video stitch step: chunk results in any order in, final frames in order out.

    Args:
        config: ``TrackingConfig`` (or anything ``as_tracking_config`` takes).
        video_id: for errors.
        num_chunks: chunks the video was cut into.
        reserved: object ids of the video's prompts (:func:`reserved_ids`).

    ``add(result, pts)`` buffers a chunk until its predecessors are in (RLE-only results, so the
    buffer is small) and returns the frames that became final, each with ``pts_time`` from the
    ``{frame index: seconds}`` given with its chunk. ``carry_dropped=True`` says the chunk was
    tracked without its predecessor's carry (the relay gave up on it): the chunk index goes to
    ``dropped_carries`` and the ids of the objects the predecessor handed on to ``dropped_objects``.
    """

    config: Any
    video_id: Optional[str]
    num_chunks: int
    reserved: Sequence[int] = ()
    stitcher: Stitcher = field(init=False)
    pending: dict = field(default_factory=dict)
    pts: dict = field(default_factory=dict)
    next_chunk: int = 0
    stitch_s: float = 0.0
    timings: dict = field(default_factory=lambda: dict.fromkeys(TIMING_KEYS, 0.0))
    dropped_carries: list = field(default_factory=list)
    dropped_objects: set = field(default_factory=set)
    _no_carry: set = field(default_factory=set)
    _prev_carry: Optional[dict] = None

    def __post_init__(self) -> None:
        self.stitcher = Stitcher(self.config, self.video_id, reserved_ids=self.reserved)

    @property
    def complete(self) -> bool:
        return self.next_chunk >= self.num_chunks

    def add(self, result: ChunkResult, pts: Optional[dict] = None, carry_dropped: bool = False) -> list[FrameResult]:
        k = int(result.chunk_index)
        if k < self.next_chunk or k in self.pending or k >= self.num_chunks:
            raise ValueError(f"video {self.video_id!r}: chunk {k} arrived twice or is outside its "
                             f"{self.num_chunks} chunks")
        self.pending[k] = result
        if carry_dropped:
            self._no_carry.add(k)
        self.pts.update(pts or {})
        for key in TIMING_KEYS:
            self.timings[key] += float(result.stats.get(key, 0.0))
        t0 = time.perf_counter()
        out: list[FrameResult] = []
        while self.next_chunk in self.pending:
            res = self.pending.pop(self.next_chunk)
            if res.chunk_index in self._no_carry:
                self._record_dropped(res.chunk_index)
            out += self.stitcher.push(res)
            self._prev_carry = res.carry_out
            self.next_chunk += 1
        if self.complete:
            out += self.stitcher.finish()
        self.stitch_s += time.perf_counter() - t0
        for fr in out:
            fr.pts_time = self.pts.pop(fr.frame_index, fr.pts_time)
        return out

    def _record_dropped(self, k: int) -> None:
        self.dropped_carries.append(int(k))
        handed_on = [o.get("track_id") for o in (self._prev_carry or {}).get("objects") or []]
        self.dropped_objects.update(int(self.stitcher.prev_ids[t]) for t in handed_on if t in self.stitcher.prev_ids)

    @property
    def stats(self) -> dict:
        return {"stitch_s": self.stitch_s, **self.timings, **{f"stitch_{k}": v for k, v in self.stitcher.stats.items()}}


@dataclass
class ChunkSequence:
    """The sequential driver of one video: chunk k's carry goes straight into chunk k+1.

    Args:
        chunks: the video's ``ChunkSpec`` list (``plan_chunks``), in order.
        config: ``TrackingConfig``.
        video_id: the video.
        prompts: all of the video's prompts (their object ids are reserved).
        original_size: (H, W) of the video's frames.
    """

    chunks: Sequence[Any]
    config: Any
    video_id: Optional[str]
    prompts: Sequence[Any] = ()
    original_size: Optional[tuple[int, int]] = None
    stats: dict = field(default_factory=dict)

    def _stitch(self) -> VideoStitch:
        self.stats.update(video_id=self.video_id, chunks=len(self.chunks), frames=0, read_s=0.0, track_s=0.0)
        return VideoStitch(self.config, self.video_id, len(self.chunks), reserved_ids(self.prompts))

    def _emit(self, stitch: VideoStitch, frames: list[FrameResult]) -> list[FrameResult]:
        self.stats["frames"] += len(frames)
        if stitch.complete:
            self.stats.update(stitch.stats)
        return frames

    def run(self, frames_of: Callable[[Any], tuple], track: Callable[..., ChunkResult],
            **extra_of: Callable[[Any], Any]) -> Iterator[FrameResult]:
        """Yield every frame's result in order. ``frames_of(spec) -> (frames, frame_indices,
        pts_times)``; ``track`` as in :func:`track_step`; ``extra_of`` maps a keyword (e.g.
        ``embeddings``) to a function of the spec giving its value."""
        stitch, carry = self._stitch(), None
        for spec in self.chunks:
            t0 = time.perf_counter()
            frames, idx, pts = frames_of(spec)
            t1 = time.perf_counter()
            res = track_step(track, frames, idx, spec, self.config, carry, video_id=self.video_id,
                             original_size=self.original_size, **{k: f(spec) for k, f in extra_of.items()})
            carry = res.carry_out
            self.stats["read_s"] += t1 - t0
            self.stats["track_s"] += time.perf_counter() - t1
            del frames
            yield from self._emit(stitch, stitch.add(res, _pts_map(idx, pts)))

    async def arun(self, frames_of: Callable[[Any], tuple],
                   track: Callable[..., Awaitable[ChunkResult]]) -> AsyncIterator[FrameResult]:
        """``run`` for an awaitable ``track`` (e.g. a Serve handle's ``track_chunk.remote``)."""
        stitch, carry = self._stitch(), None
        for spec in self.chunks:
            frames, idx, pts = frames_of(spec)
            t1 = time.perf_counter()
            res = await track_step(track, frames, idx, spec, self.config, carry, video_id=self.video_id,
                                   original_size=self.original_size)
            carry = res.carry_out
            self.stats["track_s"] += time.perf_counter() - t1
            for fr in self._emit(stitch, stitch.add(res, _pts_map(idx, pts))):
                yield fr


def _pts_map(idx, pts) -> dict:
    if pts is None:
        return {}
    return dict(zip((int(i) for i in np.asarray(idx)), (float(t) for t in np.asarray(pts))))
