"""Running the bulk job's segment stage on a running Serve deployment (``segment.backend: serve``).

Online and offline work then share one GPU pool: chunks go to ``SegEngineDeployment.track_chunk``,
which runs the same ``hqseg_ray.track.track_chunk`` on the replica's engine.

    from hqseg_ray.serve.client import segment_chunk_via_serve
    result = segment_chunk_via_serve("hqseg", frames, frame_indices, chunk_prompts, tracking_config,
                                     carry_in, chunk_index=k, video_id=vid, overlap_next=o,
                                     original_size=(h, w))

must be called from a process connected to the Ray cluster that runs the application (a Ray Data
worker of the job is). ``ServeSegmentStage`` is the drop-in Ray Data stage for ``SegmentStage``.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from hqseg_ray.serve import ENGINE_DEPLOYMENT

logger = logging.getLogger(__name__)


def engine_handle(app_name: str = "hqseg"):
    """The ``SegEngineDeployment`` handle of a running application (ValueError when absent)."""
    from ray import serve

    try:
        return serve.get_deployment_handle(ENGINE_DEPLOYMENT, app_name=app_name)
    except Exception as exc:  # Serve raises RayServeException / KeyError variants
        raise ValueError(f"no Serve application {app_name!r} with deployment {ENGINE_DEPLOYMENT!r} on this Ray "
                         f"cluster ({exc}); start it with `hqseg serve CONFIG` on the cluster, or set "
                         "segment.backend: actors") from exc


def segment_chunk_via_serve(app_name: str, frames, frame_indices, chunk_prompts, tracking_config: Any = None,
                            carry_in: Optional[dict] = None, *, handle=None, timeout_s: Optional[float] = None,
                            **kwargs):
    """``hqseg_ray.track.track_chunk`` on an engine replica of Serve application ``app_name``.

    Same arguments and result (a ``ChunkResult``) as ``track_chunk`` without the engine; keywords
    (``chunk_index``, ``video_id``, ``overlap_next``, ``original_size``) pass through. ``handle``
    reuses a handle from :func:`engine_handle` (cheaper per call). Blocking; call it from sync code.
    """
    h = handle if handle is not None else engine_handle(app_name)
    return h.track_chunk.remote(frames, frame_indices, chunk_prompts, tracking_config, carry_in,
                                **kwargs).result(timeout_s=timeout_s)


def _segment_stage_base():
    from hqseg_ray.pipeline.segment import SegmentStage

    return SegmentStage


class _RemoteEngineInfo:
    """What ``SegmentStage`` reads of a local engine (device, label), for a remote one."""

    def __init__(self, info: dict, app_name: str) -> None:
        self.device = f"serve:{app_name}:{info['device']}"
        self.label = info["label"]
        self.image_size = int(info["image_size"])


class ServeSegmentStage(_segment_stage_base()):
    """``SegmentStage`` whose tracking runs on the Serve application ``config.segment.serve_app``.

    Same rows in, same rows out; the actor holds no model (``num_gpus=0``). Everything but the two
    steps it overrides (``encode_ahead``, ``run_tracker``) is ``SegmentStage``'s, relay included;
    the chunk is encoded on the replica after the relay wait, not before it.
    """

    def __init__(self, config_json: str, job_id: Optional[str] = None):
        from hqseg_ray.config import JobConfig

        app_name = JobConfig.model_validate_json(config_json).segment.serve_app
        self._handle = engine_handle(app_name)
        info = self._handle.info.remote().result(timeout_s=600)
        super().__init__(config_json, job_id, engine=_RemoteEngineInfo(info, app_name))
        self._app_name = app_name

    def encode_ahead(self, frames, original):
        return None  # the replica encodes; frames travel once, with the chunk

    def run_tracker(self, frames, frame_indices, prompts, cfg, carry, embeddings=None, **kwargs):
        return segment_chunk_via_serve(self._app_name, frames, frame_indices, prompts, cfg, carry,
                                       handle=self._handle, **kwargs)
