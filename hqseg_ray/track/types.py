"""Result and state containers of the tracker and the stitcher.

All of them are plain dataclasses of Python lists, dicts and numpy arrays, so they pickle cheaply
through Ray. Masks are COCO compressed RLE dicts (``{"size": [h, w], "counts": str}``) at the
original frame size; dense masks never leave the tracker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, Sequence, runtime_checkable

import numpy as np

SOURCES = ("prompt", "track", "auto", "stitch")


@runtime_checkable
class Engine(Protocol):
    """What the tracker, automatic discovery and the driver need of an engine (``SegEngine`` is
    one; tests use oracles). Frames are uint8 RGB ``[N, h, w, 3]`` (long side <= ``image_size``
    when ``original_sizes`` says they were resized); masks come back at the original size.

    Attributes:
        image_size: the model's input long side (pixels); the driver resizes frames to it.
        low_res_size: ``(h, w)`` of the decoder's low-res logits (``ObjectState.logits``).
        config: the engine's ``ModelConfig`` (``encode_batch`` is read).
    """

    image_size: int
    low_res_size: tuple[int, int]
    config: Any

    def encode(self, frames: Any, original_sizes: Optional[Sequence[tuple[int, int]]] = None) -> Any:
        """Frames -> ``FrameEmbeddings`` (one per frame, ``select(range)`` gives a subset)."""

    def decode_low_res(self, embeddings: Any, prompts: Sequence[Any], multimask: Any = None,
                       hq_token_only: Optional[bool] = None) -> tuple[Any, Any]:
        """Prompts (``Prompt``, one frame each) -> (low-res logits ``[P, h, w]``, scores ``[P]``)."""

    def postprocess(self, embeddings: Any, frames: Sequence[int], logits_lr: Any, return_logits: bool = False) -> Any:
        """Low-res logits ``[P, h, w]`` -> masks ``[P, H, W]`` at each frame's original size."""


@dataclass
class FrameResult:
    """Every object's mask on one frame of a video.

    Attributes:
        frame_index: index of the frame in the video (0-based, decode order).
        object_ids: final object id of each mask (unique within the frame).
        rles: COCO compressed RLE per object, size ``[H, W]`` of the original frame.
        scores: the model's predicted IoU per object (float in [0, 1]-ish; not calibrated).
        sources: per object, "prompt" (a prompt or detector box on this frame), "track"
            (propagated), "auto" (automatically discovered object) or "stitch" (an overlap frame
            that two chunks predicted; the nearer seed's mask was kept).
        chunk_index: the chunk that emitted this frame (the later chunk on overlap frames).
        chunk_indices: per object, the chunk whose prediction was kept.
        pts_time: presentation time in seconds, when the producer knows it.
    """

    frame_index: int
    object_ids: list[int]
    rles: list[dict]
    scores: list[float]
    sources: list[str]
    chunk_index: int
    chunk_indices: list[int] = field(default_factory=list)
    pts_time: Optional[float] = None

    def __len__(self) -> int:
        return len(self.object_ids)


@dataclass
class TrackEntry:
    """One track on one frame of a chunk: a mask, or ``rle=None`` while the object is occluded.

    ``seed_distance`` is ``|frame - seed frame|`` of the seed this prediction was propagated
    from; the stitcher keeps the overlap-frame prediction with the smaller distance.
    """

    rle: Optional[dict]
    score: float
    source: str
    seed_distance: int


@dataclass
class TrackInfo:
    """A track of one chunk.

    Attributes:
        track_id: id local to the chunk.
        object_id: user-given (or carried-in) object id, or None for detector / auto tracks
            (the stitcher gives those final ids).
        kind: "prompt" | "detector" | "auto" | "carry" -- how the track was seeded first.
        carried_from: ``(chunk_index, track_id)`` of the previous chunk's track this one
            continues (relay), else None.
        seed_frames: video frame indices of this track's seeds in the chunk.
    """

    track_id: int
    object_id: Optional[int]
    kind: str
    carried_from: Optional[tuple[int, int]] = None
    seed_frames: list[int] = field(default_factory=list)


@dataclass
class ChunkResult:
    """What ``track_chunk`` returns for one chunk.

    Attributes:
        video_id: the video.
        chunk_index: position of the chunk in the video.
        frame_indices: video frame index of each local frame, ascending.
        overlap_next: video frames shared with the next chunk, as ``ChunkSpec.overlap_next``: the
            next chunk starts at ``frame_indices[-1] + 1 - overlap_next`` (0 for the last chunk;
            None = unknown, the stitcher then holds every frame until the next chunk arrives).
        tracks: ``{track_id: TrackInfo}``.
        entries: per local frame, ``{track_id: TrackEntry}`` for every track alive there.
        carry_out: the tracks' states at the chunk's last frame (see ``ObjectState``), a
            plain dict ``{"frame_index": int, "chunk_index": int, "objects": [state dicts]}``.
        stats: timings (seconds) and counters.
    """

    video_id: Optional[str]
    chunk_index: int
    frame_indices: list[int]
    overlap_next: Optional[int]
    tracks: dict[int, TrackInfo]
    entries: list[dict[int, TrackEntry]]
    carry_out: dict
    stats: dict = field(default_factory=dict)


@dataclass
class ObjectState:
    """A track's state on one frame: what the next step (or the next chunk) starts from.

    Attributes:
        track_id: local id in the chunk that produced the state.
        object_id: user / carried object id or None.
        kind: how the track was first seeded ("prompt" | "detector" | "auto" | "carry").
        frame_index: video frame index of this state.
        logits: ``[h, w]`` float32 low-res logits of the last good mask (engine.low_res_size).
        mask: ``[h, w]`` bool last good mask on the tracker's work grid (``LowResGeometry.work_size``:
            the original frame size, or the frames' size when the tracker holds them resized).
        box: ``[4]`` float64 XYXY (pixels, original frame) of the last good mask.
        areas: recent good areas (pixels), newest last; masks cut by the frame edge are left out
            once the object has been seen whole (they are not the object's size).
        velocity: ``[2]`` float (dx, dy) pixels per frame in the direction of propagation.
        lost: consecutive frames without a good mask (0 = visible on ``frame_index``).
        score: predicted IoU of the last good mask.
        seed_distance: frames from the seed this state was propagated from.
        scores: predicted IoU of recent good masks, newest last.
        hist: ``[24]`` float32 colour model (8-bin histogram per RGB channel, each summing to 1).
        full_box: ``[4]`` box of the last good mask that was not cut off (area at least 0.7 of the
            recent median): where and how big the whole object was before an occluder or the frame
            edge started to hide it; re-acquisition searches with boxes of this size.
        since_full: frames (in the direction of propagation) since ``full_box`` was observed.
        steps: recent per-frame motions ``(dx, dy)`` (optical flow, else the box centre's step) of
            frames where the object was not cut off; ``velocity`` is their median.
        areas_cut: ``areas`` holds only masks cut by the frame edge (the object has not been seen
            whole since its seed); the first whole view replaces them.
        rle: the last good mask at the original frame size as COCO RLE, or a
            :class:`~hqseg_ray.track.fullres.PendingRle` of it (the tracker writes full-resolution
            masks in the background); None = ``mask`` is at the original size.
    """

    track_id: int
    object_id: Optional[int]
    kind: str
    frame_index: int
    logits: np.ndarray
    mask: np.ndarray
    box: np.ndarray
    areas: list[int]
    velocity: np.ndarray
    lost: int = 0
    score: float = 1.0
    seed_distance: int = 0
    scores: list[float] = field(default_factory=list)
    hist: Optional[np.ndarray] = None
    full_box: Optional[np.ndarray] = None
    since_full: int = 0
    steps: list = field(default_factory=list)
    areas_cut: bool = False
    rle: Any = None

    def to_dict(self, chunk_index: int) -> dict:
        """Plain dict (numpy arrays, lists, ints; mask as RLE at the original size) that survives Ray / pickle."""
        return {"track_id": int(self.track_id), "object_id": self.object_id, "kind": self.kind,
                "frame_index": int(self.frame_index), "chunk_index": int(chunk_index),
                "logits": np.asarray(self.logits, np.float32), "mask": self.full_rle(),
                "box": [float(v) for v in self.box], "areas": [int(a) for a in self.areas],
                "velocity": [float(v) for v in self.velocity], "lost": int(self.lost),
                "score": float(self.score), "seed_distance": int(self.seed_distance),
                "scores": [float(s) for s in self.scores],
                "hist": None if self.hist is None else np.asarray(self.hist, np.float32),
                "full_box": None if self.full_box is None else [float(v) for v in self.full_box],
                "since_full": int(self.since_full),
                "steps": [[float(a), float(b)] for a, b in self.steps], "areas_cut": bool(self.areas_cut)}

    def full_rle(self) -> dict:
        """The last good mask at the original frame size as COCO RLE (waits for a pending one)."""
        from hqseg_ray.masks import rle_encode
        from hqseg_ray.track.fullres import resolve  # lazy, like the imports above

        if self.rle is None:
            return rle_encode(self.mask)
        return resolve(self.rle)

    @classmethod
    def from_dict(cls, d: dict) -> "ObjectState":
        from hqseg_ray.masks import rle_decode

        missing = [k for k in ("track_id", "frame_index", "logits", "mask", "box") if k not in d]
        if missing:
            raise ValueError(f"carried-in state is missing {missing}")
        return cls(track_id=int(d["track_id"]), object_id=d.get("object_id"), kind=d.get("kind", "carry"),
                   frame_index=int(d["frame_index"]), logits=np.asarray(d["logits"], np.float32),
                   mask=rle_decode(d["mask"]), box=np.asarray(d["box"], np.float64),
                   areas=list(d.get("areas") or [int(rle_decode(d["mask"]).sum())]),
                   velocity=np.asarray(d.get("velocity", [0.0, 0.0]), np.float64),
                   lost=int(d.get("lost", 0)), score=float(d.get("score", 1.0)),
                   seed_distance=int(d.get("seed_distance", 0)),
                   scores=[float(s) for s in d.get("scores") or [d.get("score", 1.0)]],
                   hist=None if d.get("hist") is None else np.asarray(d["hist"], np.float32),
                   full_box=None if d.get("full_box") is None else np.asarray(d["full_box"], np.float64),
                   since_full=int(d.get("since_full", 0)),
                   steps=[np.asarray(x, np.float64) for x in d.get("steps") or []],
                   areas_cut=bool(d.get("areas_cut", False)))


def as_tracking_config(config: Any) -> TrackingConfig:
    """A TrackingConfig from itself, a dict of its sections, or an object with tracker/auto/stitch."""
    from hqseg_ray.config import TrackingConfig

    if isinstance(config, TrackingConfig):
        return config
    if config is None:
        return TrackingConfig()
    if isinstance(config, dict):
        return TrackingConfig.model_validate(config)
    return TrackingConfig(**{k: getattr(config, k) for k in ("tracker", "auto", "stitch") if hasattr(config, k)})
