"""Job-level scenarios: the bulk job on a private local Ray cluster, timed and memory-sampled.

For each job the benchmark records:

* ``wall_s``: ``run_job`` from call to return (pipeline start-up and the segment actors' model
  load included; ``ray.init`` is not). ``frames_per_s`` = unique labelled frames / ``wall_s``.
* ``first_video_done_s``: when the first video's status row reached the driver; ``startup_s``: that
  minus the segment-actor seconds of that video (start-up, planning and the first decode).
* ``actor_s``: the segment actors' busy seconds (status table ``seconds``: encode + relay wait +
  track per chunk), and ``relay_wait_s`` / ``stitch_s`` from the status table.
* ``peak_rss`` / ``baseline_rss``: summed RSS of this process tree (driver, GCS, raylet, workers).
* ``cpu_s``: CPU seconds the whole tree used during the job (every Ray process, idle ones too).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional

from hqseg_ray.bench.system import Timer, TreeMemory

logger = logging.getLogger(__name__)


def start_ray(num_cpus: int, temp_root: Optional[str] = None) -> None:
    """A private local Ray (never joins another cluster on this machine)."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=num_cpus, num_gpus=0, include_dashboard=False, log_to_driver=False,
             _temp_dir=temp_root or f"/tmp/hqb{os.getpid()}")


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def job_config(manifest: str, out: str | Path, model: dict, actors: int = 1, torch_threads: int = 1,
               chunk_frames: int = 64, overlap: int = 8, cpus_per_actor: float = 1.0, decode_cpus: float = 1.0,
               stride: int = 1):
    from hqseg_ray.config import JobConfig

    return JobConfig.model_validate({
        "model": model,
        "input": {"manifest": str(manifest)},
        "chunking": {"chunk_frames": chunk_frames, "overlap": overlap, "stride": stride},
        "compute": {"segment_actors_min": actors, "segment_actors_max": actors, "gpus_per_actor": 0,
                    "cpus_per_actor": cpus_per_actor, "decode_cpus": decode_cpus, "torch_threads": torch_threads},
        "output": {"path": str(out), "overwrite": True},
    })


class _StatusTimes(logging.Handler):
    """Arrival time of each video's status row at the driver (run_job logs one line per video),
    and Ray Data's execution plan (which operators it fused)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: dict[str, float] = {}
        self.plan: Optional[str] = None

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, str) and record.msg.startswith("video %r") and record.args:
            self.times[str(record.args[0])] = time.monotonic()
        elif self.plan is None:
            text = record.getMessage()
            if "Execution plan of Dataset" in text:
                self.plan = text.split(":", 1)[-1].strip()


def run_measured_job(config, label: str) -> dict:
    """Run one job (Ray must be up) and return its timing, status-table and memory numbers."""
    import pyarrow.parquet as pq

    from hqseg_ray.pipeline.job import run_job

    out = config.output.path
    shutil.rmtree(out, ignore_errors=True)
    handler = _StatusTimes()
    loggers = [logging.getLogger(n) for n in ("hqseg_ray.pipeline.job", "ray.data._internal.execution.streaming_executor")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    t_start = time.monotonic()
    try:
        with TreeMemory() as mem, Timer() as t:
            summary = run_job(config, progress=False)
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
    rows = [r for r in pq.read_table(os.path.join(out, "videos.parquet")).to_pylist()]
    failed = [f"{r['video_id']}: {r['error']}" for r in rows if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"bench job {label!r}: {len(failed)} video(s) failed: {failed[:3]}")
    frames = {r["video_id"]: int(r["frames"] or 0) for r in rows}
    busy = {r["video_id"]: float(r["seconds"] or 0) for r in rows}
    order = sorted(handler.times.items(), key=lambda kv: kv[1])
    total = sum(frames.values())
    workers = sorted({w for r in rows for w in (r["workers"] or "").split(",") if w})
    by_pid = mem.cpu_by_pid()
    actor_cpu = sum(by_pid.get(int(w.split(":")[1]), 0.0) for w in workers if w.split(":")[1].isdigit())
    actors = config.compute.segment_actors_max
    relay = sum(float(r["relay_wait_s"] or 0) for r in rows)
    stitch = sum(float(r["stitch_s"] or 0) for r in rows)
    return {
        "label": label, "videos": len(rows), "frames": total, "objects": int(sum(int(r["objects"] or 0) for r in rows)),
        "actors": actors, "torch_threads": config.compute.torch_threads,
        "wall_s": round(t.s, 3), "frames_per_s": total / t.s,
        "first_video_done_s": round(order[0][1] - t_start, 3) if order else None,
        # before the first video's chunks ran: pipeline + actor start-up (model load), plan, first decode
        "startup_s": round(order[0][1] - t_start - busy.get(order[0][0], 0.0), 3) if order else None,
        "actor_s": round(sum(float(r["seconds"] or 0) for r in rows), 3),
        "encode_s": round(sum(float(r["encode_s"] or 0) for r in rows), 3),
        "relay_wait_s": round(relay, 3), "stitch_s": round(stitch, 3),
        "overhead_of_wall": (relay + stitch) / t.s,
        "overhead_of_actor_time": (relay + stitch) / (t.s * actors),
        "workers": workers,
        # CPU seconds of the segment actor processes (fused decode + encode + tracking + Ray worker
        # overhead): unlike their wall time, independent of how busy the shared machine was
        "actor_cpu_s": round(actor_cpu, 3), "actor_cpu_s_per_frame": actor_cpu / max(total, 1),
        "peak_rss_mib": round(mem.peak / 2**20, 1), "baseline_rss_mib": round(mem.baseline / 2**20, 1),
        "peak_rss_mib_by_process": {k: round(v / 2**20, 1) for k, v in
                                    sorted(mem.peak_by_process.items(), key=lambda kv: -kv[1])},
        "ray_data_plan": handler.plan, "decode_cpus": config.compute.decode_cpus,
        "cpus_per_actor": config.compute.cpus_per_actor, "stride": config.chunking.stride,
        "rss_samples": mem.samples, "cpu_s": round(mem.cpu_s, 2), "cpu_s_per_frame": mem.cpu_s / max(total, 1), "summary_wall_s": round(summary.wall_s, 3),
    }


def in_process_tracker(engine, manifest: str, config) -> dict:
    """``segment_video`` (no Ray) over the manifest's videos with the job's tracking and chunking:
    the same per-chunk work as the job's segment actors, in this process. Returns its time and the
    engine's encode/decode counts (which fix the engine-only baseline's decoder work)."""
    from hqseg_ray.bench.data import manifest_rows
    from hqseg_ray.track import segment_video

    before = dict(engine.stats)
    stats_all = []
    frames = 0
    cpu0 = time.process_time()
    with Timer() as t:
        for row in manifest_rows(manifest):
            st: dict = {}
            for _ in segment_video(row["video"], row["prompts"], engine, config.tracking(), chunking=config.chunking,
                                   video_id=row["video_id"], stats=st):
                frames += 1
            stats_all.append(st)
    d = {k: engine.stats[k] - before.get(k, 0) for k in engine.stats}
    agg = {k: round(sum(s.get(k, 0.0) for s in stats_all), 3)
           for k in ("read_s", "track_s", "stitch_s", "encode_s", "decode_s", "flow_s")}
    cpu = time.process_time() - cpu0
    return {"frames": frames, "seconds": round(t.s, 3), "frames_per_s": frames / t.s,
            "cpu_s": round(cpu, 3), "cpu_s_per_frame": cpu / max(frames, 1),
            "encoded_frames": d["encoded_frames"], "decoded_prompts": d["decoded_prompts"],
            "prompts_per_frame": d["decoded_prompts"] / max(frames, 1),
            "encodes_per_frame": d["encoded_frames"] / max(frames, 1), **agg}
