"""Identity across chunks: the per-video stitcher.

Chunks of one video arrive in order (each a :class:`ChunkResult` of ``track_chunk``) and
neighbours share ``overlap`` frames. For chunk k+1 the stitcher

1. gives each track a final object id: a track relayed from chunk k (``carried_from``) keeps that
   track's id; a track with a user-given ``object_id`` keeps it; every other track is matched to
   chunk k's objects by mean mask IoU over the overlap frames (Hungarian assignment through scipy,
   IoU >= ``stitch.match_iou``) and adopts the matched id. Unmatched tracks get new ids, except
   automatically discovered helper tracks when ``auto.enabled`` is off (``auto_match``), which are
   dropped;
2. resolves each overlap frame per object: the prediction whose seed is nearer wins (ties: the
   earlier chunk); a mask kept there is labelled ``"stitch"`` unless it came from a prompt;
3. emits every frame before chunk k+1's own tail (the frames it shares with chunk k+2), in order,
   as :class:`FrameResult`; ``finish()`` emits the last tail.

Memory: the held tail (RLEs of ``overlap`` frames), independent of video length.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Optional

import numpy as np

from hqseg_ray.masks import rle_iou
from hqseg_ray.track.types import ChunkResult, FrameResult, TrackEntry, as_tracking_config

logger = logging.getLogger(__name__)

# frame index -> {object id: (entry, chunk index)}
_Frames = dict[int, dict[int, tuple[TrackEntry, int]]]


def mean_iou(pairs: Iterable[tuple[Optional[dict], Optional[dict]]]) -> Optional[float]:
    """Mean mask IoU of two tracks over frames, given as (RLE or None, RLE or None) per frame:
    frames where neither has a mask are skipped, frames where only one has count 0. None when
    neither ever has a mask."""
    vals = []
    for a, b in pairs:
        if a is None and b is None:
            continue
        vals.append(0.0 if a is None or b is None else float(rle_iou([a], [b])[0, 0]))
    return float(np.mean(vals)) if vals else None


class Stitcher:
    """Incremental stitcher for one video: ``push(chunk_result)`` in chunk order, then ``finish()``.

    Args:
        config: ``TrackingConfig`` (uses ``stitch`` and ``auto``).
        video_id: for error messages.
        reserved_ids: object ids used by the video's prompts; new ids start above them, so an
            object that first appears in a later chunk never takes a user's id.
    """

    def __init__(self, config: Any = None, video_id: Optional[str] = None, reserved_ids: Iterable[int] = ()):
        self.cfg = as_tracking_config(config)
        self.video_id = video_id
        reserved = [int(i) for i in reserved_ids]
        self.next_id = max(reserved, default=0) + 1
        self.held: _Frames = {}
        self.prev_chunk: Optional[int] = None
        self.prev_ids: dict[int, int] = {}      # previous chunk's track_id -> object id
        self.last_emitted = -1
        self.stats = {"chunks": 0, "matched": 0, "relayed": 0, "new_ids": 0, "dropped_tracks": 0}

    def _new_id(self) -> int:
        oid = self.next_id
        self.next_id += 1
        self.stats["new_ids"] += 1
        return oid

    def _where(self) -> str:
        return f"video {self.video_id!r}: " if self.video_id is not None else ""

    # ------------------------------------------------------------------------------------------
    def assign_ids(self, res: ChunkResult) -> dict[int, int]:
        """``{track_id: object id}`` for the chunk's tracks (tracks left out are dropped)."""
        ids: dict[int, int] = {}
        taken: set[int] = set()
        free = []
        for tid, info in sorted(res.tracks.items()):
            src = info.carried_from
            if src is not None and self.prev_chunk is not None and src[0] == self.prev_chunk and src[1] in self.prev_ids:
                ids[tid] = self.prev_ids[src[1]]
                self.stats["relayed"] += 1
            elif info.object_id is not None:
                ids[tid] = int(info.object_id)
                self.next_id = max(self.next_id, ids[tid] + 1)
            else:
                free.append(tid)
                continue
            taken.add(ids[tid])
        if free and self.held:
            ids.update(self._match(res, free, taken))
        for tid in free:
            if tid in ids:
                continue
            if res.tracks[tid].kind == "auto" and not self.cfg.auto.enabled:
                self.stats["dropped_tracks"] += 1  # auto_match helper that matched nothing
                continue
            ids[tid] = self._new_id()
        return ids

    def _match(self, res: ChunkResult, free: list[int], taken: set[int]) -> dict[int, int]:
        from scipy.optimize import linear_sum_assignment

        overlap = [(t, f) for t, f in enumerate(res.frame_indices) if f in self.held]
        prev_objs = sorted({oid for _, f in overlap for oid in self.held[f]} - taken)
        if not overlap or not prev_objs:
            return {}
        mean = np.zeros((len(free), len(prev_objs)))
        for i, tid in enumerate(free):
            for j, oid in enumerate(prev_objs):
                pairs = []
                for t, f in overlap:
                    e_new, e_old = res.entries[t].get(tid), self.held[f].get(oid)
                    pairs.append((e_new.rle if e_new is not None else None, e_old[0].rle if e_old is not None else None))
                mean[i, j] = mean_iou(pairs) or 0.0
        out = {}
        for i, j in zip(*linear_sum_assignment(-mean)):
            if mean[i, j] >= self.cfg.stitch.match_iou:
                out[free[i]] = prev_objs[j]
                self.stats["matched"] += 1
        return out

    # ------------------------------------------------------------------------------------------
    def push(self, res: ChunkResult) -> list[FrameResult]:
        """Add the next chunk of the video; returns the frames that are now final, in order."""
        if self.prev_chunk is not None and res.chunk_index != self.prev_chunk + 1:
            raise ValueError(f"{self._where()}chunks must be pushed in order: got chunk {res.chunk_index} "
                             f"after chunk {self.prev_chunk}")
        ids = self.assign_ids(res)
        for t, f in enumerate(res.frame_indices):
            if f <= self.last_emitted:
                raise ValueError(f"{self._where()}chunk {res.chunk_index} has frame {f}, which was already emitted "
                                 "(overlap larger than the previous chunk's overlap_next?)")
            slot = self.held.setdefault(f, {})
            for tid, entry in res.entries[t].items():
                oid = ids.get(tid)
                if oid is None:
                    continue
                if entry.source == "auto" and res.tracks[tid].kind == "auto" and not self.cfg.auto.enabled:
                    entry = TrackEntry(entry.rle, entry.score, "track", entry.seed_distance)
                old = slot.get(oid)
                if old is None:
                    slot[oid] = (entry, res.chunk_index)
                elif entry.seed_distance < old[0].seed_distance:  # nearer seed wins; ties keep the earlier chunk
                    slot[oid] = (self._as_stitched(entry), res.chunk_index)
                else:
                    slot[oid] = (self._as_stitched(old[0]), old[1])
        self.prev_chunk = res.chunk_index
        self.prev_ids = ids
        self.stats["chunks"] += 1
        if res.overlap_next is None:
            keep_from = res.frame_indices[0]  # unknown tail: hold the whole chunk
        elif res.overlap_next <= 0:
            keep_from = res.frame_indices[-1] + 1
        else:  # ChunkSpec convention: the next chunk starts at (last frame + 1 - overlap_next)
            keep_from = res.frame_indices[-1] + 1 - res.overlap_next
        return self._emit(lambda f: f < keep_from)

    @staticmethod
    def _as_stitched(entry: TrackEntry) -> TrackEntry:
        if entry.rle is None or entry.source == "prompt":
            return entry
        return TrackEntry(entry.rle, entry.score, "stitch", entry.seed_distance)

    def _emit(self, ready) -> list[FrameResult]:
        out = []
        for f in sorted(k for k in self.held if ready(k)):
            slot = self.held.pop(f)
            items = sorted((oid, e, c) for oid, (e, c) in slot.items() if e.rle is not None)
            chunks = [c for _, _, c in items]
            out.append(FrameResult(f, [o for o, _, _ in items], [e.rle for _, e, _ in items],
                                   [float(e.score) for _, e, _ in items], [e.source for _, e, _ in items],
                                   max(chunks) if chunks else (self.prev_chunk or 0), chunks))
            self.last_emitted = f
        return out

    def finish(self) -> list[FrameResult]:
        """Emit every frame still held (the last chunk's tail)."""
        return self._emit(lambda f: True)
