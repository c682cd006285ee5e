"""Segment stage: the GPU actor that holds one SegEngine and tracks objects through a chunk."""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
from typing import Any

import numpy as np

from hqseg_ray.config import JobConfig
from hqseg_ray.pipeline.stages import as_str, error_of, rebatch, require, short_error, unbatch

logger = logging.getLogger(__name__)

SEGMENT_OUT = ("video", "video_id", "chunk_index", "num_chunks", "info_json", "pts_times", "frame_indices",
               "error", "result", "seconds", "encode_s", "relay_wait_s", "worker", "labels_json",
               "reserved_ids_json", "carry_dropped", "auto")
FAILED = "__failed__"


def _node_id() -> str:
    try:
        import ray

        if not ray.is_initialized():  # get_runtime_context() would start a Ray instance here
            return socket.gethostname()
        return ray.get_runtime_context().get_node_id()[:12]
    except Exception:  # noqa: BLE001 -- called outside Ray (unit tests)
        return socket.gethostname()


def _gpu_ids() -> str:
    try:
        import ray

        if not ray.is_initialized():  # get_gpu_ids() would start a Ray instance here
            return "-"
        return ",".join(str(g) for g in ray.get_gpu_ids()) or "-"
    except Exception:  # noqa: BLE001
        return "-"


class SegmentStage:
    """Ray Data callable class (``map_batches``, actor pool): frames of a chunk in, RLE tracks out.

    ``__init__`` loads the model once per actor; ``__call__`` handles one chunk per row: the
    driver's per-chunk step (``hqseg_ray.track.driver.track_step``) with the carry relayed from the
    actor that tracked the previous chunk. Frames are encoded *before* the relay wait, so a chunk
    whose predecessor is still tracking loses at most that predecessor's (decoder-only) tracking time.
    """

    name = "segment"
    needs = ("video_id", "chunk_index", "num_chunks", "overlap_next", "frames", "frame_indices", "prompts_json",
             "error")

    def __init__(self, config_json: str, job_id: str | None = None, engine: Any = None):
        from hqseg_ray.pipeline.relay import RelayClient

        self.config = JobConfig.model_validate_json(config_json)
        threads = self.config.compute.torch_threads
        if threads:
            import torch

            torch.set_num_threads(threads)
        if engine is None:
            from hqseg_ray.model.engine import SegEngine

            engine = SegEngine.load(self.config.model)
        self.engine = engine
        relay_on = self.config.stitch.mechanism == "relay"
        c = self.config.compute
        self.relay = RelayClient(job_id if relay_on else None, c.relay_stall_s, c.relay_timeout_s)
        from hqseg_ray.pipeline.metrics import JobMetrics

        self.metrics = JobMetrics()
        self.worker = f"{_node_id()}:{os.getpid()}:{self.engine.device}:gpu{_gpu_ids()}"
        logger.info("segment actor %s ready with model %s", self.worker, self.engine.label)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        return rebatch([self.process(r) for r in unbatch(batch)], SEGMENT_OUT)

    def process(self, row: dict) -> dict:
        require(self.name, row, self.needs)
        out = {k: row.get(k) for k in SEGMENT_OUT}
        out.update(result=None, seconds=0.0, encode_s=0.0, relay_wait_s=0.0, worker=self.worker, error=error_of(row),
                   carry_dropped="")
        vid, k = as_str(row["video_id"]), int(row["chunk_index"])
        if out["error"] or k < 0:
            if k >= 0:
                self.relay.put(vid, k, FAILED)
            return out
        t0 = time.perf_counter()
        self.relay.working_on(vid, k)
        try:
            result, timing = self._track(row, vid, k)
            out["result"] = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            out.update(timing)
        except Exception as exc:  # noqa: BLE001 -- the video fails, the job goes on
            logger.warning("video %r chunk %d failed in segment: %s", vid, k, exc)
            self.relay.put(vid, k, FAILED)
            out["error"] = f"segment chunk {k}: {short_error(exc)}"
        finally:
            self.relay.done()
        out["seconds"] = time.perf_counter() - t0
        self.metrics.chunk("segment", len(row["frame_indices"]), out["seconds"], out["relay_wait_s"])
        return out

    def _track(self, row: dict, vid: str, k: int):
        import json

        from hqseg_ray.prompts import PromptSpec
        from hqseg_ray.track.driver import track_step, with_auto
        from hqseg_ray.video import ChunkSpec

        frames = np.asarray(row["frames"], dtype=np.uint8)
        idx = np.asarray(row["frame_indices"], dtype=np.int64)
        original = tuple(int(v) for v in row["original_size"])
        prompts = [PromptSpec.model_validate(p) for p in json.loads(as_str(row["prompts_json"]) or "[]")]
        relay_in = k > 0 and self.relay.job_id is not None
        needed = bool(prompts or relay_in or row.get("auto") or self.config.auto.enabled)
        # encode before waiting on the relay: the wait then overlaps the previous chunk's work
        t0 = time.perf_counter()
        emb = self.encode_ahead(frames, original) if needed else None
        encode_s = time.perf_counter() - t0
        carry, wait_s, dropped = None, 0.0, ""
        if relay_in:
            t1 = time.perf_counter()
            found, carry, why = self.relay.get(vid, k - 1)
            wait_s = time.perf_counter() - t1
            if not found:
                dropped = why or f"no states from chunk {k - 1}"
                logger.warning("video %r chunk %d: gave up on the carry from chunk %d after %.0f s (%s); objects "
                               "without a seed here do not continue (recorded in videos.parquet)", vid, k, k - 1,
                               wait_s, dropped)
            if carry == FAILED:
                raise RuntimeError(f"chunk {k - 1} of this video failed")
        cfg = with_auto(self.config.tracking(), bool(row.get("auto")))
        spec = ChunkSpec(vid, as_str(row.get("video")) or "", k, int(row["num_chunks"]), 0, 0,
                         overlap_next=int(row["overlap_next"]), prompts=prompts)
        result = track_step(self._track_fn, frames, idx, spec, cfg, carry, video_id=vid, original_size=original,
                            embeddings=emb)
        self.relay.put(vid, k, result.carry_out)
        if emb is None:  # encoded elsewhere (the Serve backend): take the tracker's own timing
            encode_s = float(result.stats.get("encode_s", 0.0))
        return result, {"encode_s": encode_s, "relay_wait_s": wait_s, "carry_dropped": dropped}

    def _track_fn(self, frames, frame_indices, prompts, cfg, carry_in=None, **kwargs):
        return self.run_tracker(frames, frame_indices, prompts, cfg, carry_in, **kwargs)

    # the two steps a backend may run elsewhere (hqseg_ray.serve.client.ServeSegmentStage)
    def encode_ahead(self, frames: np.ndarray, original: tuple[int, int]):
        """Encode the chunk's frames (uint8 ``[N, h, w, 3]`` at model input size) before the relay wait."""
        return self.engine.encode(frames, original_sizes=[original] * len(frames))

    def run_tracker(self, frames, frame_indices, prompts, cfg, carry, **kwargs):
        from hqseg_ray.track import track_chunk

        return track_chunk(self.engine, frames, frame_indices, prompts, cfg, carry_in=carry, **kwargs)
