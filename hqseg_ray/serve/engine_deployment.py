"""``SegEngineDeployment``: one ``SegEngine`` per replica (one GPU each), stateless.

It holds no client state, so replicas autoscale freely and a bulk job can share them: the
ingress keeps image embeddings and video sessions and sends what each call needs.

* ``encode(image)`` -> the image's ``FrameEmbeddings`` on the CPU.
* ``decode(request)`` -> masks as COCO RLE; requests from different clients are batched with
  ``@serve.batch(max_batch_size=4)`` into one ``SegEngine.decode`` call (frame-paired, so prompts
  on different images share one decoder pass).
* ``track_chunk(...)`` -> the tracker (``hqseg_ray.track``) on this replica's engine; the same
  function the bulk job runs in its own actors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import ray
from ray import serve

from hqseg_ray.config import ModelConfig
from hqseg_ray.prompts import Prompt

logger = logging.getLogger(__name__)
DECODE_BATCH = 4  # the batch size; max_ongoing_requests must be >= this (ServeConfig checks)


@dataclass
class DecodeRequest:
    """Prompts on one encoded image. ``prompts[i].frame`` must be 0."""

    embeddings: Any  # FrameEmbeddings of one frame on the CPU, or an ObjectRef to one
    prompts: list[Prompt]
    multimask: Optional[bool] = None
    hq_token_only: Optional[bool] = None


@dataclass
class DecodeResult:
    masks: list[dict]  # per prompt: {"size", "counts", "score", "bbox_xywh", "area"}
    low_res_logits: np.ndarray  # [P, h, w] float16, for later mask_input
    batch_size: int = 1  # how many requests shared this decoder batch
    timings: dict = field(default_factory=dict)


@serve.deployment(name="SegEngineDeployment", max_ongoing_requests=16)
class SegEngineDeployment:
    def __init__(self, model: dict, batch_wait_timeout_s: float = 0.01) -> None:
        from hqseg_ray.model.engine import SegEngine

        self.model_config = ModelConfig.model_validate(model or {})
        self.engine = SegEngine.load(self.model_config)
        # one worker: the model runs one call at a time; the event loop stays free for the
        # batcher and health checks
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segengine")
        self._idle = asyncio.Event()  # set while no decoder batch computes (see ``decode``)
        self._idle.set()
        self.decode_batched.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.counts = {"encode_requests": 0, "decode_requests": 0, "decode_batches": 0, "decode_seconds": 0.0,
                       "track_chunks": 0, "batch_sizes": {str(i): 0 for i in range(1, DECODE_BATCH + 1)}}
        self._metrics = _EngineMetrics()
        logger.info("SegEngineDeployment ready: %s on %s", self.engine.label, self.engine.device)

    def reconfigure(self, user_config: dict) -> None:
        if "batch_wait_timeout_s" in (user_config or {}):
            self.decode_batched.set_batch_wait_timeout_s(float(user_config["batch_wait_timeout_s"]))

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def info(self) -> dict:
        e = self.engine
        return {"model": e.config.type, "label": e.label, "device": str(e.device),
                "image_size": e.image_size, "low_res_size": list(e.low_res_size),
                "random_init": bool(e.info.get("random_init", False))}

    def stats(self) -> dict:
        return {**self.counts, "batch_sizes": dict(self.counts["batch_sizes"]), "engine": dict(self.engine.stats)}

    # ---------------------------------------------------------------------------------------
    async def encode(self, image: np.ndarray):
        """uint8 RGB ``[H, W, 3]`` -> FrameEmbeddings of one frame, on the CPU."""
        self.counts["encode_requests"] += 1
        t0 = time.perf_counter()
        emb = await self._run(lambda: self.engine.encode(image[None]).to("cpu"))
        self._metrics.observe("encode", time.perf_counter() - t0)
        return emb

    async def decode(self, request: DecodeRequest) -> DecodeResult:
        """Decode one client's prompts; batched with other clients' (see ``decode_batched``).

        Requests wait here while a batch computes, then enter the batcher together. Without this
        gate ``serve.batch`` forms the next batch as soon as the previous one is *formed* (it then
        waits for its turn), so under load batches stay as small as the handful of requests that
        arrived within ``batch_wait_timeout_s`` (measured here: a mean of 2 with 32 clients).
        """
        await self._idle.wait()
        return await self.decode_batched(request)

    @serve.batch(max_batch_size=DECODE_BATCH, batch_wait_timeout_s=0.01)
    async def decode_batched(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        n = len(requests)
        self.counts["decode_requests"] += n
        self.counts["decode_batches"] += 1
        self.counts["batch_sizes"][str(n)] = self.counts["batch_sizes"].get(str(n), 0) + 1
        self._metrics.batch(n)
        t0 = time.perf_counter()
        self._idle.clear()
        try:
            refs = [i for i, r in enumerate(requests) if isinstance(r.embeddings, ray.ObjectRef)]
            for i, emb in zip(refs, await asyncio.gather(*(requests[i].embeddings for i in refs))):
                requests[i].embeddings = emb
            results = await self._run(self._decode_many, requests)
        finally:
            self._idle.set()
        self.counts["decode_seconds"] += time.perf_counter() - t0
        self._metrics.observe("decode", time.perf_counter() - t0)
        for r in results:
            r.batch_size = n
        return results

    def _decode_many(self, requests: list[DecodeRequest]) -> list[DecodeResult]:
        """All requests with the same (multimask, hq_token_only) in one frame-paired decode."""
        from hqseg_ray.model.engine import FrameEmbeddings

        out: list[Optional[DecodeResult]] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.multimask, r.hq_token_only), []).append(i)
        for (multimask, hq_only), idxs in groups.items():
            emb = FrameEmbeddings.concat([requests[i].embeddings for i in idxs])
            prompts, owner = [], []
            for frame, i in enumerate(idxs):
                for p in requests[i].prompts:
                    prompts.append(_with_frame(p, frame))
                    owner.append(i)
            masks, scores, low_res = self.engine.decode(emb, prompts, multimask, hq_only)
            encoded = [_mask_record(masks[k], float(scores[k])) for k in range(len(prompts))]
            for i in idxs:
                ks = [k for k, o in enumerate(owner) if o == i]
                out[i] = DecodeResult([encoded[k] for k in ks], low_res[ks].astype(np.float16))
        return out  # type: ignore[return-value]

    # ---------------------------------------------------------------------------------------
    async def track_chunk(self, frames, frame_indices, chunk_prompts, tracking_config=None, carry_in=None,
                          **kwargs):
        """``hqseg_ray.track.track_chunk(engine, ...)`` on this replica's engine, same arguments
        (``chunk_index``, ``video_id``, ``overlap_next``, ``original_size`` as keywords). Bulk jobs
        (``segment.backend: serve``) and video sessions both come here."""
        from functools import partial

        from hqseg_ray.track import track_chunk

        self.counts["track_chunks"] += 1
        t0 = time.perf_counter()
        result = await self._run(partial(track_chunk, self.engine, frames, frame_indices, chunk_prompts,
                                         tracking_config, carry_in, **kwargs))
        self._metrics.observe("track_chunk", time.perf_counter() - t0)
        return result


def _with_frame(p: Prompt, frame: int) -> Prompt:
    return Prompt(frame=frame, points=p.points, labels=p.labels, box=p.box, mask_input=p.mask_input,
                  object_id=p.object_id)


def _mask_record(mask: np.ndarray, score: float) -> dict:
    from hqseg_ray.masks import rle_area, rle_bbox_xywh, rle_encode

    rle = rle_encode(np.asarray(mask, dtype=bool))
    return {**rle, "score": score, "bbox_xywh": rle_bbox_xywh(rle), "area": rle_area(rle)}


class _EngineMetrics:
    """Prometheus metrics (through Ray's metrics agent) of one engine replica."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.batch_size = metrics.Histogram(
            "hqseg_decode_batch_size", description="Decoder requests per @serve.batch call.",
            boundaries=[1, 2, 3, 4])
        self.seconds = metrics.Histogram(
            "hqseg_engine_seconds", description="Model time per engine call, by kind.",
            boundaries=[0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10], tag_keys=("kind",))

    def batch(self, n: int) -> None:
        self.batch_size.observe(n)

    def observe(self, kind: str, seconds: float) -> None:
        self.seconds.observe(seconds, tags={"kind": kind})
