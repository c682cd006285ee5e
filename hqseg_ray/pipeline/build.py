"""``build_pipeline(config, rows) -> Dataset``: the bulk job as Ray Data operators.

    from_items(manifest rows)
      -> flat_map(PlanStage)        CPU task    probe, validate prompts, cut chunks
      -> map(DecodeStage)           CPU task    frame-exact decode, resize to model input size
      -> map_batches(SegmentStage)  GPU actors  encode + track (relay between chunks)
      -> map_batches(VideoWriter)   one actor   stitch chunks in order, write Parquet per video;
                                                pinned to the driver's node (pipeline/placement.py)

Streaming with backpressure: Ray Data runs all operators at once and bounds the bytes queued
between them, so memory does not grow with the number or length of videos. Order is preserved
so chunks reach the segment pool in plan order (the relay relies on it, see relay.py).
"""

from __future__ import annotations

import logging
from typing import Optional

from hqseg_ray.config import JobConfig

logger = logging.getLogger(__name__)

PLAN_CPUS = 0.1     # probing reads packet headers only
WRITER_CPUS = 0.1   # stitching and writing RLE rows is light


def min_cpus_needed(config: JobConfig) -> float:
    """CPUs the job needs at least (all segment actors of the minimum pool + one decode task +
    the writer + a plan task); fewer and Ray Data waits forever for a decode slot."""
    c = config.compute
    actors = c.segment_actors_min * c.cpus_per_actor if config.segment.backend == "actors" else 0.1
    return actors + c.decode_cpus + WRITER_CPUS + PLAN_CPUS


def build_pipeline(config: JobConfig, rows: list[dict], job_id: Optional[str] = None):
    import ray

    from hqseg_ray.model.registry import model_input_size
    from hqseg_ray.pipeline.stages import DecodeStage, PlanStage
    from hqseg_ray.pipeline.write import VideoWriter

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    # one chunk in flight per actor caps a pool's utilisation at 1.0; Ray Data's default upscaling
    # threshold (1.75) would then never grow the pool when GPU nodes join (measured: see docs/deploy.md)
    ctx.autoscaling_config.actor_pool_util_upscaling_threshold = 1.0
    m = config.model
    input_size = model_input_size(m.type, m.checkpoint, m.checkpoint_sha256, m.cache_dir)
    cfg_json = config.model_dump_json()
    c = config.compute

    ds = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    ds = ds.flat_map(PlanStage(config), num_cpus=PLAN_CPUS)
    ds = ds.map(DecodeStage(config, input_size), num_cpus=c.decode_cpus)
    if config.segment.backend == "serve":
        from hqseg_ray.serve.client import ServeSegmentStage

        ds = ds.map_batches(ServeSegmentStage, fn_constructor_args=(cfg_json, job_id), batch_size=1,
                            compute=ray.data.ActorPoolStrategy(min_size=c.segment_actors_min,
                                                               max_size=c.segment_actors_max),
                            num_cpus=0.1)
    else:
        from hqseg_ray.pipeline.segment import SegmentStage

        remote_args = {}
        if c.accelerator_type:
            remote_args["accelerator_type"] = c.accelerator_type
        ds = ds.map_batches(
            SegmentStage, fn_constructor_args=(cfg_json, job_id), batch_size=1,
            compute=ray.data.ActorPoolStrategy(min_size=c.segment_actors_min, max_size=c.segment_actors_max,
                                               max_tasks_in_flight_per_actor=c.max_tasks_in_flight_per_actor),
            num_gpus=c.gpus_per_actor, num_cpus=c.cpus_per_actor, **remote_args)
    from hqseg_ray.pipeline.placement import driver_node_strategy

    keys = {r["video_id"]: r["input_key"] for r in rows if r.get("input_key")}
    ds = ds.map_batches(VideoWriter, fn_constructor_args=(cfg_json, job_id, keys), batch_size=1,
                        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=WRITER_CPUS,
                        scheduling_strategy=driver_node_strategy())
    return ds
