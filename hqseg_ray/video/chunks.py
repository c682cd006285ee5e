"""Cut a video into overlapping chunks that GPU actors segment independently.

Rule (all counts in *processed* frames, i.e. on the stride grid ``0, stride, 2*stride, ...``):

1. The first chunk starts at frame 0. A chunk holds at most ``chunk_frames`` processed frames and
   shares exactly ``overlap`` of them with the next chunk (fewer only when the video ends).
2. From a chunk starting at ``s`` the natural next start is ``n = s + chunk_frames - overlap``.
   If prompt frames lie in ``(s, n]``, the next chunk starts on the *latest* of them instead, so
   it starts seeded; the current chunk then ends ``overlap`` frames after that prompt frame (it
   gets shorter; the overlap stays the same).
3. Otherwise, with ``align_to_keyframes``, the next start moves back onto the latest codec
   keyframe in ``[n - overlap, n]`` (again shortening the current chunk), so that decoding the
   next chunk starts right at its first frame instead of up to a GOP earlier.
4. The last chunk ends at the end of the video.

A prompt in the overlap tail ``(n, s + chunk_frames)`` cannot become a chunk start without
either exceeding ``chunk_frames`` or shrinking the overlap; it lands inside the next chunk.
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from .probe import VideoInfo


@dataclass
class ChunkSpec:
    """One chunk of one video: frames ``range(start, stop, stride)``.

    Attributes:
        video_id: id of the video (manifest ``video_id``).
        uri: the video's URI (what the decode stage opens).
        chunk_index: position of this chunk in the video, from 0.
        num_chunks: number of chunks of the video.
        start: first frame (inclusive, a source-frame index).
        stop: end frame (exclusive).
        stride: processed frames are ``start, start + stride, ...``.
        overlap_next: source frames shared with the next chunk: ``next.start == stop -
            overlap_next`` (0 for the last chunk). With stride 1 this is the configured overlap.
        prompts: the prompts (manifest PromptSpecs, or whatever was passed) whose frame lies in
            ``[start, stop)``.
        seeded: True when the chunk's first frame carries a prompt.
    """

    video_id: str
    uri: str
    chunk_index: int
    num_chunks: int
    start: int
    stop: int
    stride: int = 1
    overlap_next: int = 0
    prompts: list = field(default_factory=list)
    seeded: bool = False

    @property
    def frame_indices(self) -> range:
        return range(self.start, self.stop, self.stride)

    @property
    def num_processed(self) -> int:
        return len(self.frame_indices)

    @property
    def has_prompts(self) -> bool:
        return bool(self.prompts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["prompts"] = [p.model_dump() if hasattr(p, "model_dump") else p for p in self.prompts]
        return d


def _frame_of(p: Any) -> Optional[int]:
    f = p.get("frame") if isinstance(p, dict) else getattr(p, "frame", None)
    return None if f is None else int(f)


def plan_chunks(
    info: VideoInfo,
    prompts: Sequence[Any] = (),
    chunk_frames: int = 64,
    overlap: int = 8,
    stride: int = 1,
    align_to_keyframes: bool = True,
    video_id: Optional[str] = None,
) -> list[ChunkSpec]:
    """Plan the chunks of one video (see the module docstring for the rule).

    Args:
        info: the probe result (``num_frames``, ``keyframes``, ``uri``).
        prompts: objects or dicts with a ``frame`` attribute/key (manifest ``PromptSpec``).
        chunk_frames: processed frames per chunk (>= 1).
        overlap: processed frames shared by neighbouring chunks (0 <= overlap < chunk_frames).
        stride: process every ``stride``-th frame; prompt frames must lie on that grid.
        align_to_keyframes: move unseeded chunk starts back onto nearby codec keyframes.
        video_id: defaults to the file name of ``info.uri``.

    Returns:
        The chunks in order; together they cover every processed frame, neighbours share
        exactly ``overlap`` processed frames.

    Raises:
        ValueError: bad sizes, or prompt frames off the stride grid or outside the video.
    """
    from hqseg_ray.prompts import video_id_from_uri

    if chunk_frames < 1 or not (0 <= overlap < chunk_frames) or stride < 1:
        raise ValueError(f"need chunk_frames >= 1, 0 <= overlap < chunk_frames and stride >= 1; got "
                         f"chunk_frames={chunk_frames}, overlap={overlap}, stride={stride}")
    vid = video_id or video_id_from_uri(info.uri)
    n_frames = info.num_frames
    grid = -(-n_frames // stride)  # processed frames
    problems = []
    seeds = set()
    for i, p in enumerate(prompts):
        f = _frame_of(p)
        if f is None:
            continue
        if not 0 <= f < n_frames:
            problems.append(f"prompt {i}: frame {f} is outside the video ({n_frames} frames)")
        elif f % stride:
            problems.append(f"prompt {i}: frame {f} is not on the stride-{stride} grid "
                            f"(use frame {f - f % stride} or {f - f % stride + stride}, or stride 1)")
        else:
            seeds.add(f // stride)
    if problems:
        raise ValueError(f"video {vid!r}: cannot plan chunks: " + "; ".join(problems))
    seed_list = sorted(seeds)
    keys = sorted({k // stride for k in info.keyframes if k % stride == 0}) if align_to_keyframes else []

    bounds: list[tuple[int, int]] = []  # grid [s, e)
    s = 0
    while grid > 0:
        if s + chunk_frames >= grid:
            bounds.append((s, grid))
            break
        n = s + chunk_frames - overlap
        nxt = _latest_in(seed_list, s + 1, n)
        if nxt is None and keys:
            nxt = _latest_in(keys, max(s + 1, n - overlap), n)
        nxt = n if nxt is None else nxt
        bounds.append((s, nxt + overlap))
        s = nxt

    chunks = []
    for ci, (gs, ge) in enumerate(bounds):
        start, stop = gs * stride, min((ge - 1) * stride + 1, n_frames)
        nxt_start = bounds[ci + 1][0] * stride if ci + 1 < len(bounds) else stop
        chunks.append(ChunkSpec(
            video_id=vid, uri=info.uri, chunk_index=ci, num_chunks=len(bounds), start=start,
            stop=stop, stride=stride, overlap_next=stop - nxt_start,
            prompts=[p for p in prompts if _frame_of(p) is not None and start <= _frame_of(p) < stop],
            seeded=gs in seeds,
        ))
    return chunks


def _latest_in(sorted_values: list[int], lo: int, hi: int) -> Optional[int]:
    """Largest value in ``[lo, hi]``, or None."""
    i = bisect.bisect_right(sorted_values, hi) - 1
    return sorted_values[i] if i >= 0 and sorted_values[i] >= lo else None
