"""``build_pipeline(config, rows) -> Dataset``: the bulk job as Ray Data operators.

    from_items(manifest rows) -> flat_map(PlanStage)   CPU tasks   probe, validate prompts, cut chunks
    fair_order(chunk rows)                              driver      interleave videos (see below)
    from_items(chunk rows, one block per chunk)
      -> map(DecodeStage)           CPU task per chunk  frame-exact decode, resized frame by frame
      -> map_batches(SegmentStage)  GPU actors          encode + track (relay between chunks)
      -> map_batches(VideoWriter)   one actor           stitch chunks in order, write Parquet per video;
                                                      pinned to the driver's node (pipeline/placement.py)

Planning runs first (a probe reads packet headers only; a chunk row is small: it carries only its
own slice of the pts table), so the dispatch order can be chosen: ``fair_order`` interleaves the
chunks of enough videos that each video has at most ``compute.max_chunks_in_flight_per_video``
chunks among any ``segment_actors_max`` consecutive ones -- one long video cannot hold every actor
waiting on its relay while other videos wait. The rest streams with backpressure: Ray Data runs
the operators at once and bounds the bytes queued between them. Order is preserved so chunks reach
the segment pool in that order (the relay relies on a video's chunks arriving in order, see
relay.py). A block whose task fails outside the stages' own per-video error handling is dropped
(``max_errored_blocks``), and its video gets a failed status row; the dataset goes on.
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
    ctx.max_errored_blocks = -1  # one poisoned chunk never fails the dataset (run_job reports its video)
    # one chunk in flight per actor caps a pool's utilisation at 1.0; Ray Data's default upscaling
    # threshold (1.75) would then never grow the pool when GPU nodes join (measured: see docs/deploy.md)
    ctx.autoscaling_config.actor_pool_util_upscaling_threshold = 1.0
    m = config.model
    input_size = model_input_size(m.type, m.checkpoint, m.checkpoint_sha256, m.cache_dir)
    cfg_json = config.model_dump_json()
    c = config.compute

    planned = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    chunks = fair_order(planned.flat_map(PlanStage(config), num_cpus=PLAN_CPUS).take_all(),
                        c.max_chunks_in_flight_per_video, c.segment_actors_max)
    ds = ray.data.from_items(chunks, override_num_blocks=max(1, len(chunks)))  # decode: one task per chunk
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


def fair_order(chunks: list[dict], per_video: int, actors: int) -> list[dict]:
    """Chunk rows in dispatch order: round-robin over ``ceil(actors / per_video)`` videos at a time
    (a finished video's place goes to the next one), each video's chunks in chunk order.

    Any ``actors`` consecutive rows then hold at most ``per_video`` chunks of one video while
    enough videos are left; the last long video alone runs with the whole pool. Few videos are
    open at once, so the writer holds few unfinished videos. Rows of failed plans come first.
    """
    import math
    from collections import OrderedDict, deque

    queues: "OrderedDict[str, deque]" = OrderedDict()
    failed = []
    for row in chunks:
        if int(row.get("chunk_index", 0)) < 0:
            failed.append(row)
        else:
            queues.setdefault(str(row["video_id"]), deque()).append(row)
    for q in queues.values():
        q_sorted = sorted(q, key=lambda r: int(r["chunk_index"]))
        q.clear()
        q.extend(q_sorted)
    width = max(1, math.ceil(max(1, actors) / max(1, per_video)))
    waiting = deque(queues.values())
    active = [waiting.popleft() for _ in range(min(width, len(waiting)))]
    out = list(failed)
    while active:
        for i, q in enumerate(active):
            if q:
                out.append(q.popleft())
        active = [q for q in active if q]
        while len(active) < width and waiting:
            active.append(waiting.popleft())
    return out
