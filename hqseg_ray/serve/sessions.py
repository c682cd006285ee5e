"""Video sessions of the online endpoint: upload a video once, prompt any frame, propagate.

A session holds the video's frames (at the model's input size), its prompts and the latest
propagation's per-frame results. Sessions are bounded in count, total bytes and idle time
(``serve.max_sessions``, ``session_max_bytes``, ``session_ttl_s``); a full store answers 429
rather than dropping somebody else's active session.

Propagation is the bulk job's own tracking: ``hqseg_ray.video.plan_chunks`` cuts the session into
chunks, each chunk runs ``hqseg_ray.track.track_chunk`` on an engine replica (the same
``SegEngineDeployment.track_chunk`` a bulk job with ``segment.backend: serve`` calls), the
previous chunk's ``carry_out`` relays object states, and ``hqseg_ray.track.Stitcher`` turns the
chunk results into one ``FrameResult`` per frame -- all through ``hqseg_ray.track.driver.ChunkSequence``,
the same driver as ``hqseg segment``.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

import numpy as np

from hqseg_ray.config import ServeConfig
from hqseg_ray.serve.cache import BoundedCache
from hqseg_ray.serve.errors import Busy, ClientError, Conflict, NotFound, PayloadTooLarge

logger = logging.getLogger(__name__)


@dataclass
class VideoSession:
    """One client's video. ``frames[p]`` is video frame ``frame_indices[p]``."""

    session_id: str
    info: Any  # hqseg_ray.video.VideoInfo
    frames: np.ndarray  # [N, h, w, 3] uint8, long side <= the model's input size
    frame_indices: np.ndarray  # [N] int
    pts_times: np.ndarray  # [N] float seconds
    prompts: list = field(default_factory=list)  # PromptSpec, at most one per (object, frame)
    results: dict = field(default_factory=dict)  # frame index -> FrameResult of the last propagation
    propagating: bool = False

    @property
    def original_size(self) -> tuple[int, int]:
        return int(self.info.height), int(self.info.width)

    @property
    def nbytes(self) -> int:
        masks = sum(len(r["counts"]) for fr in self.results.values() for r in fr.rles)
        return int(self.frames.nbytes) + masks + 200 * len(self.results)

    def describe(self) -> dict:
        return {"session_id": self.session_id, "frames": int(len(self.frame_indices)),
                "fps": float(self.info.fps), "width": int(self.info.width), "height": int(self.info.height),
                "prompts": [p.model_dump(exclude_none=True) for p in self.prompts],
                "propagated_frames": len(self.results)}


def frame_json(fr, frame_index: int, pts_time: Optional[float]) -> dict:
    """One frame's masks as JSON: COCO RLE per object with score, source and box."""
    from hqseg_ray.masks import rle_bbox_xywh

    objects = [{"object_id": int(o), "size": r["size"], "counts": r["counts"], "score": float(s),
                "source": src, "bbox_xywh": rle_bbox_xywh(r)}
               for o, r, s, src in zip(fr.object_ids, fr.rles, fr.scores, fr.sources)] if fr else []
    return {"frame": int(frame_index), "pts_time": pts_time, "objects": objects}


class SessionStore:
    def __init__(self, cfg: ServeConfig, image_size: int) -> None:
        self.cfg = cfg
        self.image_size = int(image_size)
        self.cache: BoundedCache[VideoSession] = BoundedCache(cfg.session_max_bytes, cfg.session_ttl_s,
                                                              max_items=cfg.max_sessions)
        self.reserved_bytes = 0  # frames of sessions being decoded now (see ``create``)
        self.pending = 0  # sessions being created now

    def stats(self) -> dict:
        return {"count": len(self.cache), "bytes": self.cache.nbytes, "max_bytes": self.cache.max_bytes,
                "max_sessions": self.cfg.max_sessions,
                "reserved_bytes": self.reserved_bytes, "pending": self.pending, **self.cache.stats}

    def get(self, session_id: str) -> VideoSession:
        sess = self.cache.get(session_id)
        if sess is None:
            raise NotFound(f"video session {session_id!r} does not exist: unknown, deleted, or closed after "
                           f"{self.cfg.session_ttl_s:g} s idle; create one with POST /v1/videos")
        return sess

    def delete(self, session_id: str) -> None:
        if self.cache.pop(session_id) is None:
            raise NotFound(f"video session {session_id!r} does not exist")

    # -- create ----------------------------------------------------------------------------------
    async def create(self, data: bytes, name: str = "") -> VideoSession:
        """Video bytes -> a new session. The container header is read first (whitelisted demuxers
        only, see ``media``); frame size and count are checked and the frames' bytes reserved
        against ``serve.session_max_bytes`` before any frame is decoded (413 when the video can
        never fit, 429 when it fits once other sessions close). ``name`` (the client's file name)
        is never used to open the file. The store itself is only touched on the event loop."""
        import asyncio

        self._check_room(0)
        self.pending += 1
        path = None
        try:
            path, info = await asyncio.to_thread(self._probe, data)
            need = self._frames_nbytes(info)
            self._reserve(need)
            try:
                sess = await asyncio.to_thread(self._read, path, info)
            finally:
                self.reserved_bytes -= need
        finally:
            self.pending -= 1
            if path is not None:
                os.unlink(path)
        self._check_room(sess.nbytes)
        self.cache.put(sess.session_id, sess, sess.nbytes)
        return sess

    def _check_room(self, nbytes: int) -> None:
        """429 unless a session slot (and ``nbytes`` more) is free now, counting sessions being created."""
        if not nbytes and len(self.cache) + self.pending >= self.cfg.max_sessions:
            raise Busy(f"{self.cfg.max_sessions} video sessions are open (serve.max_sessions); DELETE one "
                       "or wait for an idle one to close")
        if nbytes and self.cache.nbytes + self.reserved_bytes + nbytes > self.cache.max_bytes:
            raise Busy(f"video sessions hold {self.cache.nbytes + self.reserved_bytes} of {self.cache.max_bytes} "
                       f"bytes (serve.session_max_bytes); this video needs {nbytes}; DELETE a session or wait "
                       "for an idle one to close")

    def _reserve(self, nbytes: int) -> None:
        if nbytes > self.cache.max_bytes:
            raise PayloadTooLarge(f"this video needs {nbytes} bytes at model size, more than all sessions may "
                                  f"hold ({self.cache.max_bytes} bytes, serve.session_max_bytes); send a "
                                  "shorter or smaller video")
        self._check_room(nbytes)
        self.reserved_bytes += nbytes

    def _frames_nbytes(self, info) -> int:
        """Bytes of the video's frames as a session keeps them (long side <= the model's input size)."""
        h, w = int(info.height), int(info.width)
        scale = min(1.0, self.image_size / max(h, w, 1))
        return int(info.num_frames) * (int(h * scale) + 1) * (int(w * scale) + 1) * 3

    def _check_limits(self, frames: int, width: int, height: int) -> None:
        if frames > self.cfg.max_video_frames:
            raise PayloadTooLarge(f"video has {frames} frames; sessions take at most "
                                  f"{self.cfg.max_video_frames} (serve.max_video_frames)")
        if width * height > self.cfg.max_image_pixels:
            raise PayloadTooLarge(f"video frames are {width}x{height}, over "
                                  f"{self.cfg.max_image_pixels} pixels (serve.max_image_pixels)")

    def _probe(self, data: bytes):
        """Write the bytes to a temp file (fixed suffix), read the header with whitelisted
        demuxers, check the limits, then probe (demux only) -> (path, VideoInfo)."""
        from hqseg_ray.serve.media import TEMP_SUFFIX, open_header
        from hqseg_ray.video import VideoError, probe_video

        if not data:
            raise ClientError("the video is empty")
        fd, path = tempfile.mkstemp(prefix="hqseg-session-", suffix=TEMP_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            header = open_header(path)
            self._check_limits(header.frames, header.width, header.height)
            try:
                info = probe_video(path)
            except VideoError as exc:
                raise ClientError(f"not a readable video: {exc.reason}") from None
            self._check_limits(info.num_frames, info.width, info.height)
        except BaseException:
            os.unlink(path)
            raise
        return path, info

    def _read(self, path: str, info) -> VideoSession:
        """Decode every frame at model size."""
        from hqseg_ray.video import VideoError, read_frames

        size = self.image_size if max(info.width, info.height) > self.image_size else None
        try:
            frames, idx, times = read_frames(path, size=size, info=info)
        except VideoError as exc:
            raise ClientError(f"not a readable video: {exc.reason}") from None
        return VideoSession("vid_" + secrets.token_hex(8), info, frames, np.asarray(idx), np.asarray(times))

    # -- prompts ---------------------------------------------------------------------------------
    def add_prompts(self, sess: VideoSession, prompts: list) -> None:
        """Add prompts; a prompt for an (object, frame) already prompted replaces it (a correction).
        Bounded per request (``max_prompts``, ``max_points`` per prompt) and per session
        (``max_session_prompts``, ``max_session_objects``)."""
        from hqseg_ray.prompts import ManifestRow, validate_prompts
        from hqseg_ray.serve.schemas import check_prompt_bounds

        cfg = self.cfg
        check_prompt_bounds(prompts, cfg.max_prompts, cfg.max_points)
        if sess.propagating:
            raise Conflict("this session is propagating; add prompts when the stream has finished")
        new_keys = {(p.object_id, p.frame) for p in prompts if p.object_id is not None}
        kept = [p for p in sess.prompts if p.object_id is None or (p.object_id, p.frame) not in new_keys]
        merged = kept + list(prompts)
        if len(merged) > cfg.max_session_prompts:
            raise ClientError(f"the session would hold {len(merged)} prompts; the limit is "
                              f"{cfg.max_session_prompts} (serve.max_session_prompts)")
        objects = {p.object_id for p in merged if p.object_id is not None}
        if len(objects) > cfg.max_session_objects:
            raise ClientError(f"the session would track {len(objects)} objects; the limit is "
                              f"{cfg.max_session_objects} (serve.max_session_objects)")
        try:
            validate_prompts(ManifestRow(video="session", video_id=sess.session_id, prompts=merged), sess.info)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        sess.prompts = merged

    # -- propagate -------------------------------------------------------------------------------
    async def propagate(self, sess: VideoSession, engine, tracking: Any) -> AsyncIterator[dict]:
        """Track every prompted object through the whole video; yields one frame's JSON at a time.

        ``engine`` is the ``SegEngineDeployment`` handle; ``tracking`` a ``TrackingConfig``.
        """
        from hqseg_ray.track.driver import ChunkSequence
        from hqseg_ray.video import plan_chunks

        if not sess.prompts:
            raise ClientError("the session has no prompts: POST /v1/videos/{id}/prompts first")
        if sess.propagating:
            raise Conflict("this session is already propagating")
        chunk = self.cfg.session_chunk_frames
        chunks = plan_chunks(sess.info, sess.prompts, chunk_frames=chunk, overlap=max(1, chunk // 8),
                             stride=1, align_to_keyframes=False, video_id=sess.session_id)
        seq = ChunkSequence(chunks, tracking, sess.session_id, sess.prompts, sess.original_size)
        pos = {int(i): p for p, i in enumerate(sess.frame_indices)}

        def frames_of(spec):
            sel = [pos[i] for i in range(spec.start, spec.stop, spec.stride) if i in pos]
            return sess.frames[sel], sess.frame_indices[sel], sess.pts_times[sel]

        sess.propagating, sess.results = True, {}
        t0 = time.perf_counter()
        try:
            async for fr in seq.arun(frames_of, engine.track_chunk.remote):
                yield self._record(sess, fr, pos)
        finally:
            sess.propagating = False
            if sess.session_id in self.cache:
                self.cache.resize(sess.session_id, sess.nbytes)
        logger.info("session %s: propagated %d frames in %.2f s", sess.session_id, len(sess.results),
                    time.perf_counter() - t0)

    @staticmethod
    def _record(sess: VideoSession, fr, pos: dict) -> dict:
        sess.results[int(fr.frame_index)] = fr
        p = pos.get(int(fr.frame_index))
        return frame_json(fr, fr.frame_index, float(sess.pts_times[p]) if p is not None else None)

    def frame_masks(self, sess: VideoSession, frame: int) -> dict:
        n = len(sess.frame_indices)
        if not 0 <= frame < n:
            raise NotFound(f"frame {frame} is outside the video ({n} frames, 0..{n - 1})")
        if not sess.results:
            raise NotFound(f"session {sess.session_id!r} has not been propagated: POST /v1/videos/"
                           f"{sess.session_id}/propagate first")
        p = {int(i): k for k, i in enumerate(sess.frame_indices)}.get(frame)
        return frame_json(sess.results.get(frame), frame, float(sess.pts_times[p]) if p is not None else None)
