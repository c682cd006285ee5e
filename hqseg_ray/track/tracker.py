"""Propagation inside one chunk: every object, forward and backward from each of its seeds.

Seeds are prompts (points / box / mask, any frame), detector boxes (prompts without
``object_id``), carried-in states (a previous chunk's ``carry_out``) and automatically discovered
masks (chunk's first frame). The chunk's frames are encoded once; a forward sweep then a backward
sweep visit the frames, and on each frame all objects are decoded by one
``SegEngine.decode_low_res`` call (the engine batches them ``decode_batch`` at a time).

Each frame of an object is predicted from its *nearest* seed: between two seeds s1 < s2 the
forward run from s1 covers frames up to the midpoint (ties go forward) and the backward run from
s2 the rest, so a later prompt corrects the track from its frame on and back to halfway to the
previous seed. The first seed also runs backward to the chunk start.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

import numpy as np

from hqseg_ray.config import TrackingConfig  # noqa: F401  (documented type of config)
from hqseg_ray.masks import mask_to_box, rle_encode
from hqseg_ray.track.fullres import DEFAULT_THREADS, FullResWriter, frame_job, resolve
from hqseg_ray.track.motion import LowResGeometry, Motion, estimate_motions, to_gray, update_colour_model
from hqseg_ray.track.preds import Predictions, Verdict, judge, predictions
from hqseg_ray.track.seeds import SeedPrompt, carried_states, normalize_prompts
from hqseg_ray.track.step import occluded_state, propagation_prompt, reacquire_prompts, visible_state
from hqseg_ray.track.stitch import mean_iou
from hqseg_ray.track.types import (ChunkResult, Engine, ObjectState, TrackEntry, TrackInfo,
                                   as_tracking_config)

logger = logging.getLogger(__name__)

RLE_THREADS = DEFAULT_THREADS  # threads making the full-resolution masks + RLE (0: in the tracker's thread)
ENCODE_AHEAD = True  # encode a chunk's later batches on a background thread while the first ones are tracked


@dataclass
class _Seed:
    local: int                              # local frame; -1 = a carried state from before the chunk
    kind: str                               # prompt | detector | auto | carry
    prompt: Optional[SeedPrompt] = None     # decoded on its frame
    state: Optional[ObjectState] = None     # used as is (carry, auto): no decode


@dataclass
class _Track:
    info: TrackInfo
    seeds: dict[int, _Seed] = field(default_factory=dict)

    def prev_seed(self, t: int) -> Optional[int]:
        before = [s for s in self.seeds if s <= t]
        return max(before) if before else None

    def next_seed(self, t: int) -> Optional[int]:
        after = [s for s in self.seeds if s > t]
        return min(after) if after else None


@dataclass
class _Job:
    tid: int
    prompt: Any
    mode: str                               # seed | prop
    prev: Optional[ObjectState] = None
    motion: Optional[Motion] = None
    pred_box: Optional[np.ndarray] = None
    seed_kind: str = "prompt"
    candidates: Optional[list] = None       # re-acquisition: several prompts, the best one wins


def track_chunk(engine: Engine, frames, frame_indices: Sequence[int], chunk_prompts: Sequence[Any],
                config: Any = None,
                carry_in: Optional[dict] = None, *, chunk_index: int = 0, video_id: Optional[str] = None,
                overlap_next: Optional[int] = None, original_size: Optional[tuple[int, int]] = None,
                embeddings=None) -> ChunkResult:
    """Track every seeded object through one chunk.

    Args:
        engine: a ``SegEngine`` (any :class:`~hqseg_ray.track.types.Engine`).
        frames: uint8 RGB ``[N, H, W, 3]`` (or a list), the chunk's frames in order. They may be
            pre-resized (long side = model input size) when ``original_size`` is given.
        frame_indices: ``[N]`` ascending video frame index of each frame.
        chunk_prompts: the prompts whose frame lies in the chunk (manifest ``PromptSpec`` / dicts /
            engine ``Prompt``; video frame indices, original-frame pixels).
        config: ``TrackingConfig`` (tracker, auto, stitch sections) or a dict of it.
        carry_in: the previous chunk's ``carry_out`` (relay), or None.
        chunk_index, video_id, overlap_next: copied into the result (the stitcher needs them).
        original_size: (H, W) of the video's frames when ``frames`` were resized.
        embeddings: precomputed ``FrameEmbeddings`` of ``frames`` (e.g. encoded ahead of a relay).

    Returns:
        A :class:`ChunkResult`. A chunk with no prompt, no carried state and no automatic
        discovery has no tracks (an empty result, not an error).
    """
    cfg = as_tracking_config(config)
    where = f"video {video_id!r} chunk {chunk_index}: " if video_id is not None else f"chunk {chunk_index}: "
    frames, fidx = _check_frames(frames, frame_indices, where)
    orig = (int(original_size[0]), int(original_size[1])) if original_size else tuple(frames.shape[1:3])
    geo = LowResGeometry(orig, engine.image_size, engine.low_res_size, work_size=tuple(frames.shape[1:3]))
    run = _ChunkRun(engine, frames, fidx, cfg, geo, chunk_index, where)
    try:
        run.add_prompts(chunk_prompts)
        run.add_carry(carry_in)
        discover = cfg.auto.enabled or (cfg.stitch.mechanism == "auto_match" and chunk_index > 0 and not carry_in)
        if run.tracks or discover:
            run.encode(embeddings)
            if discover:
                run.discover()
            run.sweep(forward=True)
            run.sweep(forward=False)
            run.dedupe()
        return run.result(video_id, overlap_next)
    finally:
        run.close()


def _check_frames(frames, frame_indices, where: str) -> tuple[np.ndarray, list[int]]:
    frames = np.asarray(frames) if not isinstance(frames, np.ndarray) else frames
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{where}frames must be uint8 [N, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    fidx = [int(f) for f in frame_indices]
    if len(fidx) != len(frames):
        raise ValueError(f"{where}{len(fidx)} frame indices for {len(frames)} frames")
    if len(fidx) == 0:
        raise ValueError(f"{where}the chunk has no frames")
    if any(b <= a for a, b in zip(fidx, fidx[1:])):
        raise ValueError(f"{where}frame_indices must be strictly increasing")
    return frames, fidx


class _ChunkRun:
    """The state of ``track_chunk`` on one chunk (see the module docstring)."""

    def __init__(self, engine, frames, fidx, cfg: TrackingConfig, geo: LowResGeometry, chunk_index: int, where: str):
        self.engine, self.frames, self.fidx, self.cfg, self.geo = engine, frames, fidx, cfg, geo
        self.tcfg = cfg.tracker
        self.chunk_index, self.where = chunk_index, where
        self.local_of = {f: i for i, f in enumerate(fidx)}
        self.tracks: dict[int, _Track] = {}
        self.by_object: dict[int, int] = {}
        self.detectors: dict[int, list[SeedPrompt]] = {}
        self.entries: list[dict[int, TrackEntry]] = [{} for _ in fidx]
        self.seed_states: dict[tuple[int, int], ObjectState] = {}
        self.final: dict[int, ObjectState] = {}
        self._parts: list[tuple[int, int, Future]] = []
        self._encoder: Optional[ThreadPoolExecutor] = None
        self._grays: dict[int, tuple[np.ndarray, float]] = {}
        self._work: dict[int, np.ndarray] = {}
        self.writer = FullResWriter(geo, RLE_THREADS)
        self.stats = {"frames": len(fidx), "encode_s": 0.0, "decode_s": 0.0, "flow_s": 0.0, "discover_s": 0.0,
                      "decode_calls": 0, "decoded_prompts": 0}

    # -- seeds --------------------------------------------------------------------------------
    def _new_track(self, object_id: Optional[int], kind: str, carried_from=None) -> _Track:
        tid = len(self.tracks) + 1
        tr = _Track(TrackInfo(tid, object_id, kind, carried_from))
        self.tracks[tid] = tr
        if object_id is not None:
            self.by_object[object_id] = tid
        return tr

    def _add_seed(self, tr: _Track, seed: _Seed) -> None:
        tr.seeds[seed.local] = seed
        if seed.local >= 0:
            tr.info.seed_frames = sorted(set(tr.info.seed_frames) | {self.fidx[seed.local]})

    def add_prompts(self, prompts: Sequence[Any]) -> None:
        seeds = normalize_prompts(list(prompts or []), self.geo, self.where)
        outside = [s.frame for s in seeds if s.frame not in self.local_of]
        if outside:
            raise ValueError(f"{self.where}prompt frame(s) {sorted(set(outside))} are not frames of this chunk "
                             f"({self.fidx[0]}..{self.fidx[-1]}, {len(self.fidx)} frames)")
        for sp in seeds:
            t = self.local_of[sp.frame]
            if sp.object_id is None:
                self.detectors.setdefault(t, []).append(sp)
                continue
            tid = self.by_object.get(sp.object_id)
            tr = self.tracks[tid] if tid is not None else self._new_track(sp.object_id, "prompt")
            self._add_seed(tr, _Seed(t, "prompt", prompt=sp))

    def add_carry(self, carry_in: Optional[dict]) -> None:
        states = carried_states(carry_in, self.fidx[0], self.fidx[-1], self.engine.low_res_size,
                                self.geo.original_size, self.where)
        src_chunk = int(carry_in.get("chunk_index", self.chunk_index - 1)) if carry_in else -1
        for st in states:
            if st.frame_index in self.local_of:
                t = self.local_of[st.frame_index]
            elif st.frame_index < self.fidx[0]:
                t = -1
            else:
                raise ValueError(f"{self.where}carried-in state is from frame {st.frame_index}, which is not on "
                                 "this chunk's frame grid")
            tid = self.by_object.get(st.object_id) if st.object_id is not None else None
            if tid is not None and t in self.tracks[tid].seeds:
                continue  # a prompt on the carried frame wins
            tr = self.tracks[tid] if tid is not None else self._new_track(st.object_id, "carry")
            tr.info.carried_from = (src_chunk, st.track_id)
            st = replace(st, track_id=tr.info.track_id, kind=tr.info.kind, rle=rle_encode(st.mask),
                         mask=self.geo.to_work(st.mask))
            self._add_seed(tr, _Seed(t, "carry", state=st))

    # -- model ----------------------------------------------------------------------------------
    def encode(self, embeddings=None) -> None:
        """Encode the chunk's frames ``encode_batch`` at a time (or take ``embeddings``). The first
        batch is encoded here, the others one after the other on a background thread
        (``ENCODE_AHEAD``): the forward sweep tracks a batch's frames while the next batch is being
        encoded, and :meth:`_embeddings` waits for frame t's batch."""
        if embeddings is not None:
            if len(embeddings) != len(self.fidx):
                raise ValueError(f"{self.where}{len(embeddings)} precomputed embeddings for {len(self.fidx)} frames")
            done: Future = Future()
            done.set_result(embeddings)
            self._parts = [(0, len(self.fidx), done)]
            return
        n = len(self.frames)
        bs = max(self.tcfg.encode_batch or self.engine.config.encode_batch, 1)

        def enc(i: int):
            t0 = time.perf_counter()
            out = self.engine.encode(self.frames[i:i + bs], [self.geo.original_size] * len(self.frames[i:i + bs]))
            self.stats["encode_s"] += time.perf_counter() - t0
            return out

        first: Future = Future()
        first.set_result(enc(0))
        self._parts = [(0, min(bs, n), first)]
        rest = list(range(bs, n, bs))
        if rest and ENCODE_AHEAD:
            self._encoder = ThreadPoolExecutor(1, thread_name_prefix="hqseg-encode")
            self._parts += [(i, min(i + bs, n), self._encoder.submit(enc, i)) for i in rest]
        else:
            for i in rest:
                f: Future = Future()
                f.set_result(enc(i))
                self._parts.append((i, min(i + bs, n), f))

    def _embeddings(self, t: int):
        """(embeddings holding local frame t, index of their first frame); waits for the batch."""
        for start, end, fut in self._parts:
            if start <= t < end:
                return fut.result(), start
        raise IndexError(f"{self.where}frame {t} was not encoded")

    def close(self) -> None:
        """Stop the background threads (encoder, full-resolution writer)."""
        if self._encoder is not None:
            self._encoder.shutdown(wait=True, cancel_futures=True)
            self._encoder = None
        self.writer.close()

    def _gray(self, t: int) -> tuple[np.ndarray, float]:
        if t not in self._grays:
            frame = self._work_frame(t)
            g, f = to_gray(frame)
            self._grays[t] = (g, f * frame.shape[1] / self.geo.original_size[1])
            if len(self._grays) > 4:  # a sweep needs this frame and its neighbour
                self._grays.pop(next(iter(self._grays)))
        return self._grays[t]

    def _work_frame(self, t: int) -> np.ndarray:
        """Frame t on the work grid (the frame itself unless it is larger than WORK_LONG_SIDE)."""
        if tuple(self.frames.shape[1:3]) == self.geo.work_size:
            return self.frames[t]
        if t not in self._work:
            import cv2

            self._work[t] = cv2.resize(self.frames[t], self.geo.work_size[::-1], interpolation=cv2.INTER_AREA)
            if len(self._work) > 4:
                self._work.pop(next(iter(self._work)))
        return self._work[t]

    def discover(self) -> None:
        from hqseg_ray.track.auto import discover_objects

        t0 = time.perf_counter()
        found = discover_objects(self.engine, self._embeddings(0)[0], 0, self.cfg.auto, image=self.frames[0])
        for k in range(len(found)):
            tr = self._new_track(None, "auto")
            m = found.masks[k]
            st = ObjectState(track_id=tr.info.track_id, object_id=None, kind="auto", frame_index=self.fidx[0],
                             logits=found.logits[k], mask=self.geo.to_work(m), box=mask_to_box(m),
                             areas=[int(np.count_nonzero(m))], velocity=np.zeros(2), lost=0,
                             score=float(found.scores[k]), seed_distance=0, scores=[float(found.scores[k])],
                             rle=rle_encode(m))
            self._add_seed(tr, _Seed(0, "auto", state=st))
        self.stats["discover_s"] += time.perf_counter() - t0
        self.stats["discovered"] = len(found)

    # -- propagation ------------------------------------------------------------------------------
    def _emit_state(self, t: int, tid: int, st: ObjectState) -> None:
        rle = st.full_rle() if st.lost == 0 else None
        source = "auto" if self.tracks[tid].info.kind == "auto" else "track"
        self.entries[t][tid] = TrackEntry(rle, float(st.score), source, int(st.seed_distance))

    def sweep(self, forward: bool) -> None:
        """One pass over the chunk's frames (see the module docstring for which run covers a frame)."""
        n = len(self.fidx)
        live: dict[int, tuple[ObjectState, int]] = {}
        if forward:
            for tid, tr in self.tracks.items():
                if -1 in tr.seeds:
                    live[tid] = (tr.seeds[-1].state, -1)
        for t in (range(n) if forward else range(n - 1, -1, -1)):
            jobs: list[_Job] = []
            for tid, tr in list(self.tracks.items()):
                if forward:
                    seed = tr.seeds.get(t)
                    if seed is not None and seed.state is not None:  # carried / discovered state: used as is
                        live[tid] = (seed.state, t)
                        self._emit_state(t, tid, seed.state)
                        continue
                    if seed is not None:
                        prev = live[tid][0] if tid in live else None
                        jobs.append(_Job(tid, seed.prompt.to_prompt(t), "seed", prev=prev, seed_kind=seed.kind))
                        live.pop(tid, None)
                        continue
                    if tid not in live:
                        continue
                    s, q = live[tid][1], tr.next_seed(t)
                    if q is not None and (t - s) > (q - t):  # the next seed's backward run covers t
                        del live[tid]
                        continue
                else:
                    s_next = t + 1
                    seed = tr.seeds.get(s_next)
                    if seed is not None and seed.state is None and (tid, s_next) in self.seed_states:
                        st0 = self.seed_states[(tid, s_next)]
                        live[tid] = (replace(st0, velocity=np.zeros(2), steps=[]), s_next)
                    if tid not in live:
                        continue
                    s, p = live[tid][1], tr.prev_seed(t)
                    if p is not None and (s - t) >= (t - p):  # the previous seed's forward run covers t
                        del live[tid]
                        continue
                jobs.append(_Job(tid, None, "prop", prev=live[tid][0]))
            if forward and t in self.detectors:
                jobs = self._match_detectors(t, jobs, live)
            if not jobs:
                continue
            self._prepare(t, jobs, t - 1 if forward else t + 1)
            for job, st in zip(jobs, self._decode(t, jobs)):
                if st is None:
                    live.pop(job.tid, None)
                else:
                    live[job.tid] = (st, t if job.mode == "seed" else live.get(job.tid, (None, t))[1])
        if forward:
            self.final = {tid: st for tid, (st, _) in live.items()}

    def _prepare(self, t: int, jobs: list[_Job], prev_t: int) -> None:
        """Fill in the propagation prompts (motion from optical flow between prev_t and t)."""
        props = [j for j in jobs if j.mode == "prop" and j.prompt is None]
        if not props:
            return
        t0 = time.perf_counter()
        flow_jobs = [j for j in props if j.prev.lost == 0 and self.tcfg.method == "flow"]
        motions: dict[int, Motion] = {}
        if flow_jobs and 0 <= prev_t < len(self.fidx):
            g0, f0 = self._gray(prev_t)
            g1, _ = self._gray(t)
            found = estimate_motions(g0, g1, f0, [j.prev.mask for j in flow_jobs], self.tcfg.flow_max_corners,
                                     self.tcfg.flow_min_points)
            motions = {j.tid: m for j, m in zip(flow_jobs, found)}
        for j in props:
            m = motions.get(j.tid)
            if m is None or m.points == 0:  # no flow (textureless, or a carried state from before the chunk)
                m = Motion(float(j.prev.velocity[0]), float(j.prev.velocity[1]))
            j.motion = m
            if j.prev.lost > 0:
                j.candidates, j.pred_box = reacquire_prompts(j.prev, t, self.tcfg, self.geo, self.frames[t])
                j.prompt = j.candidates[0]
            else:
                j.prompt, j.pred_box = propagation_prompt(j.prev, m, t, self.tcfg, self.geo)
        self.stats["flow_s"] += time.perf_counter() - t0

    def _match_detectors(self, t: int, jobs: list[_Job], live: dict) -> list[_Job]:
        """Detector boxes on frame t continue the track they overlap most (IoU >= detector_match_iou,
        Hungarian) as a seed, or start a new track."""
        from scipy.optimize import linear_sum_assignment

        from hqseg_ray.masks import box_iou

        dets = self.detectors[t]
        props = [j for j in jobs if j.mode == "prop"]
        self._prepare(t, props, t - 1)
        matched: dict[int, int] = {}
        if props:
            iou = box_iou(np.stack([d.box for d in dets]), np.stack([j.pred_box for j in props]))
            for r, c in zip(*linear_sum_assignment(-iou)):
                if iou[r, c] >= self.tcfg.detector_match_iou:
                    matched[r] = c
        for r, det in enumerate(dets):
            if r in matched:
                job = props[matched[r]]
                mi = job.prompt.mask_input if self.tcfg.method == "flow" else None
                sp = SeedPrompt(det.frame, None, box=det.box, mask_input=mi)
                self._add_seed(self.tracks[job.tid], _Seed(t, "detector", prompt=sp))
                job.mode, job.prompt, job.seed_kind, job.candidates = "seed", sp.to_prompt(t), "detector", None
            else:
                tr = self._new_track(None, "detector")
                self._add_seed(tr, _Seed(t, "detector", prompt=det))
                jobs.append(_Job(tr.info.track_id, det.to_prompt(t), "seed", seed_kind="detector"))
        return jobs

    def _decode(self, t: int, jobs: list[_Job]) -> list[Optional[ObjectState]]:
        """Decode all jobs of frame t in one engine call, judge the predictions and commit the
        verdict (entries, full-resolution masks); return the new states (None = lost for good)."""
        preds = self._predict(t, jobs)
        verdict = judge(jobs, preds, self._work_frame(t), self.tcfg, self.geo)
        return self._commit(t, jobs, preds, verdict)

    def _predict(self, t: int, jobs: list[_Job]) -> Predictions:
        emb, first = self._embeddings(t)  # (waits for the background encoder first: not decode time)
        t0 = time.perf_counter()
        flat, owner = [], []
        for k, j in enumerate(jobs):
            cands = j.candidates if j.candidates else [j.prompt]
            flat += cands
            owner += [k] * len(cands)
        if first:  # the prompts' frames index this batch's embeddings
            flat = [replace(p, frame=p.frame - first) for p in flat]
        logits_t, scores_t = self.engine.decode_low_res(emb, flat)
        logits, scores = logits_t.float().cpu().numpy(), scores_t.float().cpu().numpy()
        self.stats["decode_s"] += time.perf_counter() - t0
        self.stats["decode_calls"] += 1
        self.stats["decoded_prompts"] += len(flat)
        return predictions(self.geo, owner, flat, [jobs[k].mode == "seed" for k in owner], logits, scores,
                           self.tcfg.clip_to_box, self.tcfg.box_margin)

    def _commit(self, t: int, jobs: list[_Job], pr: Predictions, v: Verdict) -> list[Optional[ObjectState]]:
        """New states and entries of frame t from the verdict; the kept masks' full-resolution RLE
        is made in the background (``FullResWriter``)."""
        writers = [k for k in range(len(jobs)) if v.writers[k]]
        pending = {}
        if writers:
            pos = {k: i for i, k in enumerate(writers)}
            job = frame_job([jobs[k].tid for k in writers], [v.ok[k] for k in writers],
                            pr.raw_logits[[v.pick[k] for k in writers]], [pr.clip_boxes[v.pick[k]] for k in writers],
                            [(pos[hi], pos[lo]) for hi, lo in v.carve if hi in pos and lo in pos], v.shared)
            pending = self.writer.submit(job)
        out: list[Optional[ObjectState]] = []
        for k, job in enumerate(jobs):
            i = v.pick[k]
            mask, score, ok, logits = v.masks[k], float(pr.scores[i]), v.ok[k], pr.logits[i]
            info = self.tracks[job.tid].info
            seen = dict(area=v.areas[k], box=v.boxes[k], at_border=v.border[k])
            if job.mode == "seed":
                template = job.prev or ObjectState(
                    track_id=job.tid, object_id=info.object_id, kind=info.kind, frame_index=self.fidx[t],
                    logits=logits, mask=mask, box=np.asarray(job.prompt.box if job.prompt.box is not None
                                                             else [0, 0, 1, 1], np.float64),
                    areas=[], velocity=np.zeros(2))
                st = (visible_state(None, template, self.fidx[t], mask, logits, score, None, True, self.tcfg, **seen)
                      if ok else replace(template, frame_index=self.fidx[t], lost=max(1, template.lost + 1),
                                         seed_distance=0))
                self.seed_states[(job.tid, t)] = st
            else:
                st = (visible_state(job.prev, job.prev, self.fidx[t], mask, logits, score, job.motion, False,
                                    self.tcfg, contact=v.near[k], **seen)
                      if ok else occluded_state(job.prev, self.fidx[t]))
            if ok:
                st = replace(st, rle=pending[job.tid])
                if v.hists[k] is not None:  # colour model: set by a seed, then updated slowly
                    base = job.prev.hist if job.mode != "seed" and job.prev is not None else None
                    st = replace(st, hist=update_colour_model(base, v.hists[k], self.tcfg.appearance_update_min))
            source = "auto" if info.kind == "auto" else ("prompt" if job.mode == "seed" else "track")
            self.entries[t][job.tid] = TrackEntry(pending.get(job.tid) if ok else None, score, source,
                                                  int(st.seed_distance))
            out.append(None if st.lost > self.tcfg.max_lost_frames else st)
        return out

    # -- result -----------------------------------------------------------------------------------
    def dedupe(self) -> None:
        """Drop auto / detector tracks that duplicate a prompted or carried track (mean mask IoU over
        the frames where either has a mask >= auto.dedupe_iou)."""
        self._resolve_rles()
        strong = [tid for tid, tr in self.tracks.items() if tr.info.kind in ("prompt", "carry")]
        weak = [tid for tid, tr in self.tracks.items() if tr.info.kind in ("auto", "detector")]
        if not strong or not weak:
            return
        drop = set()
        for w in weak:
            for s in strong:
                iou = mean_iou((e.get(w).rle if w in e else None, e.get(s).rle if s in e else None)
                               for e in self.entries)
                if iou is not None and iou >= self.cfg.auto.dedupe_iou:
                    drop.add(w)
                    break
        for w in drop:
            del self.tracks[w]
            self.final.pop(w, None)
            for ent in self.entries:
                ent.pop(w, None)
        self.stats["deduplicated"] = len(drop)

    def _resolve_rles(self) -> None:
        """Wait for the background full-resolution masks: every entry's ``rle`` becomes a dict."""
        for ent in self.entries:
            for e in ent.values():
                e.rle = resolve(e.rle)

    def result(self, video_id: Optional[str], overlap_next: Optional[int]) -> ChunkResult:
        self._resolve_rles()
        carry = {"frame_index": self.fidx[-1], "chunk_index": self.chunk_index,
                 "objects": [st.to_dict(self.chunk_index) for tid, st in sorted(self.final.items())
                             if tid in self.tracks]}
        self.stats["objects"] = len(self.tracks)
        return ChunkResult(video_id, self.chunk_index, list(self.fidx), overlap_next,
                           {tid: tr.info for tid, tr in self.tracks.items()}, self.entries, carry, dict(self.stats))
