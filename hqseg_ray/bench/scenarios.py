"""The benchmark scenarios: one function per scenario, each adding its raw numbers to
``ctx.results`` (see ``hqseg_ray.bench.run`` for the order and the settings)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from hqseg_ray.bench.run import Context


# ----------------------------------------------------------------------------------------------
def _clips(ctx: Context) -> str:
    from hqseg_ray.bench.data import clips

    s = ctx.settings
    return str(clips(ctx.data_dir, s.job_videos, s.job_frames, s.frame_size, s.objects_per_video, s.seed))


def _frames(ctx: Context, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` frames of the benchmark clips (across videos) and the first video's boxes."""
    from hqseg_ray.bench.data import manifest_rows, read_video_frames

    rows = manifest_rows(_clips(ctx))
    parts, have = [], 0
    for r in rows:
        if have >= n:
            break
        f = read_video_frames(r["video"], n - have)
        parts.append(f)
        have += len(f)
    boxes = np.asarray([p["box"] for p in rows[0]["prompts"]], dtype=np.float64)
    return np.concatenate(parts)[:n], boxes


# ----------------------------------------------------------------------------------------------
def sc_engine(ctx: Context) -> None:
    from hqseg_ray.bench.engine import encode_throughput, to_input

    eng = ctx.engine()
    frames, _ = _frames(ctx, ctx.settings.engine_frames)
    r = encode_throughput(eng, *to_input(eng, frames))
    r.update(model=eng.label, input_size=eng.image_size, frame_size=list(frames.shape[1:3]))
    ctx.results["engine"] = r


def sc_naive(ctx: Context) -> None:
    from hqseg_ray.bench.data import grid_boxes
    from hqseg_ray.bench.engine import engine_boxes, naive_loop

    s, eng = ctx.settings, ctx.engine()
    frames, clip_boxes = _frames(ctx, s.naive_frames)
    h, w = frames.shape[1:3]
    out = {}
    for k in s.naive_objects:
        boxes = grid_boxes(k, h, w)
        naive = naive_loop(eng, frames, boxes)
        ours = engine_boxes(eng, frames, boxes)
        out[str(k)] = {"naive_frames_per_s": naive["frames_per_s"], "engine_frames_per_s": ours["frames_per_s"],
                       "speedup": ours["frames_per_s"] / naive["frames_per_s"]}
    # the job's own videos and boxes: the naive loop the job replaces (speed-up of the whole job)
    job_objects = naive_loop(eng, frames, clip_boxes)
    ctx.results["naive"] = {"frames": len(frames), "per_objects": out, "job_objects": job_objects}


def sc_objects(ctx: Context) -> None:
    from hqseg_ray.bench.data import grid_boxes
    from hqseg_ray.bench.engine import object_scaling, to_input

    s, eng = ctx.settings, ctx.engine()
    frames, _ = _frames(ctx, s.scaling_frames)
    h, w = frames.shape[1:3]
    r = object_scaling(eng, *to_input(eng, frames), lambda k: grid_boxes(k, h, w), s.scaling_objects, s.ab_reps)
    r["model"] = eng.label
    ctx.results["objects"] = r


def sc_speed(ctx: Context) -> None:
    from hqseg_ray.bench.data import grid_boxes
    from hqseg_ray.bench.engine import (ab_encode, count_sdpa_modules, decode_variants, encode_variants,
                                        mask_agreement, to_input, track_like_prompt)
    from hqseg_ray.model.engine import SegEngine

    s, eng = ctx.settings, ctx.engine()
    frames, boxes = _frames(ctx, s.ab_frames)
    fin, orig = to_input(eng, frames)
    r = ab_encode(encode_variants(eng, fin, orig), s.ab_reps)
    emb = eng.encode(fin[:1], original_sizes=orig[:1])
    h, w = frames.shape[1:3]
    prompts = [track_like_prompt(eng, 0, b) for b in grid_boxes(s.ab_decode_prompts, h, w)]
    dec = ab_encode(decode_variants(eng, emb, prompts), s.ab_reps)
    bf16 = SegEngine(eng.sam, eng.config.model_copy(update={"dtype": "bfloat16"}), eng.info)
    ctx.results["speed"] = {"model": eng.label, "frames": len(frames), "attention_modules": count_sdpa_modules(eng),
                            "variants": r, "decode_prompts": len(prompts), "decode_variants": dec,
                            "bf16_mask_iou_vs_fp32": mask_agreement(eng, bf16, fin, orig, boxes)}


def sc_vit_tiny(ctx: Context) -> None:
    import time as _t

    from hqseg_ray.bench.data import grid_boxes
    from hqseg_ray.bench.engine import (ab_encode, count_sdpa_modules, decode_variants, encode_all, load_engine,
                                        object_scaling, to_input, track_like_prompt)
    from hqseg_ray.config import ModelConfig
    from hqseg_ray.model.engine import SegEngine

    s = ctx.settings
    eng = load_engine(ModelConfig(type="vit_tiny", checkpoint=None, allow_random_init=True, device="cpu"))
    bf16 = SegEngine(eng.sam, eng.config.model_copy(update={"dtype": "bfloat16"}), eng.info)
    frames, _ = _frames(ctx, s.vit_tiny_frames)
    fin, orig = to_input(eng, frames)

    def timed(e):
        def run():
            t0 = _t.perf_counter()
            encode_all(e, fin, orig)
            return (_t.perf_counter() - t0) / len(fin)
        return run

    variants = {"fp32": timed(eng)}
    if s.mode == "full":
        variants["bf16"] = timed(bf16)
    ab = ab_encode(variants, 1)
    enc = ab["fp32"]["median_s"]
    h, w = frames.shape[1:3]
    emb = eng.encode(fin[:1], original_sizes=orig[:1])
    prompts = [track_like_prompt(eng, 0, b) for b in grid_boxes(s.vit_tiny_decode_prompts, h, w)]
    dec = ab_encode(decode_variants(eng, emb, prompts, include_bf16=s.mode == "full"), 1)
    scal = object_scaling(eng, fin[:1], orig[:1], lambda k: grid_boxes(k, h, w), s.vit_tiny_objects)
    ctx.results["vit_tiny"] = {"model": eng.label, "input_size": eng.image_size, "frames": len(fin),
                               "encode": ab, "frames_per_s": 1.0 / enc, "vit_attention_modules": count_sdpa_modules(eng),
                               "decode_prompts": len(prompts), "decode_variants": dec, "objects": scal}
    del eng, bf16


def sc_vit_b(ctx: Context) -> None:
    """Object scaling with a bigger encoder (random-weight vit_b, 1024 px, one frame)."""
    from hqseg_ray.bench.data import grid_boxes
    from hqseg_ray.bench.engine import load_engine, object_scaling, to_input
    from hqseg_ray.config import ModelConfig

    s = ctx.settings
    if s.mode == "quick":
        ctx.not_measured["vit_b"] = "not measured in --quick (one vit_b encode takes 10-20 s on this CPU)"
        return
    eng = load_engine(ModelConfig(type="vit_b", checkpoint=None, allow_random_init=True, device="cpu"))
    frames, _ = _frames(ctx, 1)
    fin, orig = to_input(eng, frames)
    h, w = frames.shape[1:3]
    scal = object_scaling(eng, fin, orig, lambda k: grid_boxes(k, h, w), s.vit_b_objects, warmup=False)
    ctx.results["vit_b"] = {"model": eng.label, "input_size": eng.image_size, "objects": scal}
    del eng


def _job_model_cfg(ctx: Context, manifest: str, out: Path, actors: int, decode_cpus: float = 1.0):
    from hqseg_ray.bench.jobs import job_config

    s = ctx.settings
    return job_config(manifest, out, ctx.model, actors=actors, torch_threads=s.torch_threads,
                      chunk_frames=s.chunk_frames, overlap=s.overlap, decode_cpus=decode_cpus)


def sc_job(ctx: Context) -> None:
    from hqseg_ray.bench.data import manifest_rows, read_video_frames
    from hqseg_ray.bench.engine import engine_only, to_input
    from hqseg_ray.bench.jobs import in_process_tracker, run_measured_job

    manifest = _clips(ctx)
    cfg = _job_model_cfg(ctx, manifest, ctx.out / "jobs" / "actors1", 1)
    eng = ctx.engine()
    tracker = in_process_tracker(eng, manifest, cfg)
    ppf = tracker["prompts_per_frame"]

    def measure_engine_only() -> dict:
        agg = {"frames": 0, "prompts": 0, "encode_s": 0.0, "decode_s": 0.0, "postprocess_s": 0.0, "seconds": 0.0,
               "cpu_s": 0.0}
        for row in manifest_rows(manifest):
            frames = read_video_frames(row["video"])
            boxes = np.asarray([p["box"] for p in row["prompts"]], dtype=np.float64)
            r = engine_only(eng, *to_input(eng, frames), boxes, ppf)
            for k in agg:
                agg[k] += r[k]
        agg["frames_per_s"] = agg["frames"] / agg["seconds"]
        agg["cpu_s_per_frame"] = agg["cpu_s"] / agg["frames"]
        agg["prompts_per_frame"] = agg["prompts"] / agg["frames"]
        return agg

    agg = measure_engine_only()
    ctx.ray()
    job = run_measured_job(cfg, "1 actor")
    res = {"engine_only": agg, "in_process_tracker": tracker, "job": job}
    if ctx.settings.mode == "full":
        # Ray Data fuses the decode map into the segment actors when their remote args are equal
        # (num_cpus 1, num_gpus 0 on a CPU machine): video decode then runs inside the actor, in
        # series with encode. decode_cpus 0.5 keeps decode in its own tasks, overlapping encode.
        cfg2 = _job_model_cfg(ctx, manifest, ctx.out / "jobs" / "actors1-unfused", 1, decode_cpus=0.5)
        res["job_decode_tasks"] = run_measured_job(cfg2, "1 actor, decode in separate tasks")
        # engine-only again after the jobs: the machine's load drifts; efficiency uses the mean
        after = measure_engine_only()
        res["engine_only_before"], res["engine_only_after"] = dict(agg), after
        for k in ("encode_s", "decode_s", "postprocess_s", "seconds", "cpu_s", "cpu_s_per_frame"):
            agg[k] = (agg[k] + after[k]) / 2
        agg["frames_per_s"] = agg["frames"] / agg["seconds"]
    ctx.results["job"] = res


def sc_actors(ctx: Context) -> None:
    from hqseg_ray.bench.jobs import run_measured_job

    manifest = _clips(ctx)
    ctx.ray()
    one = ctx.results.get("job", {}).get("job")
    if one is None:
        one = run_measured_job(_job_model_cfg(ctx, manifest, ctx.out / "jobs" / "actors1", 1), "1 actor")
    two = run_measured_job(_job_model_cfg(ctx, manifest, ctx.out / "jobs" / "actors2", 2), "2 actors")
    ctx.results["actors"] = {"1": one, "2": two}


def sc_length(ctx: Context) -> None:
    from hqseg_ray.bench.data import long_video
    from hqseg_ray.bench.jobs import job_config, run_measured_job, start_ray, stop_ray

    s = ctx.settings
    out = {}
    ctx.close()  # each length job gets a fresh Ray, so neither inherits the other's workers
    for secs in s.length_seconds:
        manifest = long_video(ctx.data_dir, secs, s.length_fps, s.length_size, s.seed)
        cfg = job_config(str(manifest), ctx.out / "jobs" / f"length{int(secs)}", ctx.model, actors=1,
                         torch_threads=s.torch_threads, chunk_frames=s.chunk_frames, overlap=s.overlap,
                         stride=s.length_stride)
        start_ray(s.ray_cpus)
        try:
            r = run_measured_job(cfg, f"{secs:g} s video")
        finally:
            stop_ray()
        r.update(video_seconds=secs, fps=s.length_fps, video_frames=int(round(secs * s.length_fps)))
        out[f"{secs:g}"] = r
    ctx.results["length"] = out


def sc_serve(ctx: Context) -> None:
    from hqseg_ray.bench.serve import serve_latency

    s = ctx.settings
    ctx.ray()
    r = serve_latency(ctx.model, s.serve_clients, s.serve_seconds, size=s.frame_size)
    if "not_measured" in r:
        ctx.not_measured["serve"] = r["not_measured"]
    ctx.results["serve"] = r


def sc_compile(ctx: Context) -> None:
    from hqseg_ray.bench.compile_probe import run_probe

    s = ctx.settings
    if s.mode == "quick":
        ctx.not_measured["compile"] = "not measured in --quick (a CPU compile takes minutes)"
        return
    r = run_probe(ctx.model["checkpoint"], s.ab_frames, s.torch_threads, s.compile_timeout_s)
    if "not_measured" in r:
        ctx.not_measured["compile"] = r["not_measured"]
    ctx.results["compile"] = r


def sc_feed(ctx: Context) -> None:
    """Non-model CPU of the tracker per 1080p frame (instant fake engine), toy and vit_tiny geometry."""
    from hqseg_ray.bench.feed import feed_table

    s = ctx.settings
    ctx.results["feed"] = {"rows": feed_table(s.feed_objects, s.feed_frames)}


RUNNERS: dict[str, Callable[[Context], None]] = {
    "engine": sc_engine, "naive": sc_naive, "objects": sc_objects, "speed": sc_speed, "vit_tiny": sc_vit_tiny,
    "vit_b": sc_vit_b, "feed": sc_feed,
    "job": sc_job, "actors": sc_actors, "length": sc_length, "serve": sc_serve, "compile": sc_compile,
}
