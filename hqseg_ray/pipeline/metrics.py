"""Prometheus metrics of the bulk job (Ray's metrics agent exports them with the cluster's).

What an operator watches: frames/s and latency per stage, mask confidence, objects lost and
re-acquired, failed videos. Created lazily inside Ray workers; outside Ray (unit tests) every
call is a no-op.
"""

from __future__ import annotations

import logging
from typing import Optional

logger = logging.getLogger(__name__)

_SCORE_BOUNDS = [0.1, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
_SECONDS_BOUNDS = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300]


class JobMetrics:
    def __init__(self) -> None:
        self._m: Optional[dict] = None

    def _metrics(self) -> Optional[dict]:
        if self._m is None:
            try:
                import ray
                from ray.util import metrics

                if not ray.is_initialized():
                    return None
                self._m = {
                    "frames": metrics.Counter("hqseg_job_frames", "Frames segmented by the bulk job.", ("stage",)),
                    "chunk_s": metrics.Histogram("hqseg_job_chunk_seconds", "Seconds per chunk and stage.",
                                                 _SECONDS_BOUNDS, ("stage",)),
                    "score": metrics.Histogram("hqseg_job_mask_score", "Predicted IoU of emitted masks.",
                                               _SCORE_BOUNDS),
                    "videos": metrics.Counter("hqseg_job_videos", "Videos finished, by status.", ("status",)),
                    "relay_wait_s": metrics.Counter("hqseg_job_relay_wait_seconds",
                                                    "Seconds segment actors waited on the relay."),
                }
            except Exception as exc:  # noqa: BLE001 -- metrics must never fail a job
                logger.debug("metrics unavailable: %s", exc)
                return None
        return self._m

    def chunk(self, stage: str, frames: int, seconds: float, relay_wait_s: float = 0.0) -> None:
        m = self._metrics()
        if m:
            m["frames"].inc(frames, tags={"stage": stage})
            m["chunk_s"].observe(seconds, tags={"stage": stage})
            if relay_wait_s:
                m["relay_wait_s"].inc(relay_wait_s)

    def scores(self, values) -> None:
        m = self._metrics()
        if m:
            for v in values:
                m["score"].observe(float(v))

    def video(self, status: str) -> None:
        m = self._metrics()
        if m:
            m["videos"].inc(1, tags={"status": status})
