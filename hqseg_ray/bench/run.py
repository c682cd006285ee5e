"""``run_bench``: every scenario of one benchmark run, on the same frames, in one process tree.

Steps: copy the model file (a checkpoint replaced mid-run must not change the model), generate
or reuse the synthetic videos, run the selected scenarios in a fixed order, then derive the
contract numbers (efficiency, speed-up over naive, RSS ratio, actor scaling) from what was
measured in this run only.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

logger = logging.getLogger(__name__)

SCENARIOS = ("engine", "naive", "objects", "speed", "vit_tiny", "vit_b", "job", "actors", "length", "serve", "compile")
# compile runs only when named: compiling the encoder on a CPU takes minutes
DEFAULT_SCENARIOS = tuple(s for s in SCENARIOS if s != "compile")
QUICK_TEST_SCENARIOS = ("engine", "naive", "job")

# small random-weight ViT used where the trained toy is missing (--quick) and for the length
# scenario, whose 10-minute video would take the toy model longer than a benchmark run may
SMALL_SPEC = dict(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=(1,), image_size=256, patch_size=16,
                  window_size=4, prompt_embed_dim=64, decoder_mlp_dim=128, decoder_num_heads=4,
                  iou_head_hidden_dim=64)


@dataclass
class Settings:
    """Sizes of one benchmark run (``quick`` for CI, ``full`` for docs/benchmarks.md)."""

    mode: str
    torch_threads: int = 1
    ray_cpus: int = 4                      # logical CPUs of the private Ray (2 physical cores here)
    frame_size: tuple[int, int] = (240, 320)
    objects_per_video: int = 2
    job_videos: int = 4
    job_frames: int = 96
    chunk_frames: int = 64
    overlap: int = 8
    engine_frames: int = 32
    naive_frames: int = 16
    naive_objects: tuple[int, ...] = (1, 4, 16)
    scaling_frames: int = 8
    scaling_objects: tuple[int, ...] = (1, 4, 16, 64)
    ab_frames: int = 16
    ab_reps: int = 3
    ab_decode_prompts: int = 16
    vit_tiny_decode_prompts: int = 4
    vit_tiny_frames: int = 2
    vit_tiny_objects: tuple[int, ...] = (1, 4, 16)
    vit_b_objects: tuple[int, ...] = (1, 4, 16)
    length_seconds: tuple[float, float] = (30.0, 600.0)
    length_fps: int = 24
    length_stride: int = 12                # label every 12th frame (2 per second): 1200 frames of a 10-min video
    length_size: tuple[int, int] = (120, 160)
    serve_clients: tuple[int, ...] = (1, 16)
    serve_seconds: float = 10.0
    compile_timeout_s: float = 180.0
    seed: int = 7

    @classmethod
    def quick(cls) -> "Settings":
        return cls(mode="quick", job_videos=1, job_frames=24, chunk_frames=16, overlap=2, engine_frames=8,
                   naive_frames=3, scaling_frames=2, ab_frames=4, ab_reps=1, ab_decode_prompts=4, vit_tiny_frames=1,
                   vit_tiny_objects=(1, 4), length_seconds=(2.0, 20.0), serve_seconds=3.0)

    @classmethod
    def full(cls) -> "Settings":
        return cls(mode="full")


@dataclass
class Context:
    settings: Settings
    out: Path
    data_dir: Path
    model: dict                            # the job's model section (toy or its stand-in)
    model_note: str
    small_model: dict
    results: dict = field(default_factory=dict)
    not_measured: dict = field(default_factory=dict)
    _engine: object = None
    _ray: bool = False

    def engine(self):
        if self._engine is None:
            from hqseg_ray.bench.engine import load_engine
            from hqseg_ray.config import ModelConfig

            self._engine = load_engine(ModelConfig.model_validate(self.model))
        return self._engine

    def ray(self) -> None:
        if not self._ray:
            from hqseg_ray.bench.jobs import start_ray

            start_ray(self.settings.ray_cpus)
            self._ray = True

    def close(self) -> None:
        if self._ray:
            from hqseg_ray.bench.jobs import stop_ray

            stop_ray()
            self._ray = False


def _prepare_models(out: Path) -> tuple[dict, str, dict]:
    from hqseg_ray.model.registry import SHIPPED_TOY_CHECKPOINT, ViTSpec, build_vit_sam, save_spec_checkpoint

    mdir = out / "model"
    mdir.mkdir(parents=True, exist_ok=True)
    small = mdir / "small-random.pt"
    import torch

    torch.manual_seed(0)
    save_spec_checkpoint(build_vit_sam(ViTSpec(**SMALL_SPEC)), ViTSpec(**SMALL_SPEC), small, half=False)
    small_model = {"type": "toy", "checkpoint": str(small), "device": "cpu"}
    if SHIPPED_TOY_CHECKPOINT.exists():
        toy = mdir / "toy.pt"
        shutil.copyfile(SHIPPED_TOY_CHECKPOINT, toy)
        meta = torch.load(toy, map_location="cpu", weights_only=False).get("meta") or {}
        note = (f"toy (trained on synthetic scenes; checkpoint step {meta.get('step')} of {meta.get('total_steps')}, "
                f"final={meta.get('final')}), copied to {toy} at the start of the run")
        return {"type": "toy", "checkpoint": str(toy), "device": "cpu"}, note, small_model
    note = ("the toy checkpoint hqseg_ray/model/weights/toy.pt is ABSENT: every 'toy' number of this run is a "
            f"small RANDOM-weight ViT ({SMALL_SPEC['embed_dim']}-dim, depth {SMALL_SPEC['depth']}, 256 px)")
    return dict(small_model), note, small_model


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


RUNNERS: dict[str, Callable[[Context], None]] = {
    "engine": sc_engine, "naive": sc_naive, "objects": sc_objects, "speed": sc_speed, "vit_tiny": sc_vit_tiny,
    "vit_b": sc_vit_b,
    "job": sc_job, "actors": sc_actors, "length": sc_length, "serve": sc_serve, "compile": sc_compile,
}


def run_bench(out: str | Path, settings: Settings, scenarios: Optional[list[str]] = None, command: str = "",
              data_dir: Optional[str | Path] = None, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run the scenarios and write ``bench.json``, ``bench.md`` and the plots under ``out``;
    returns the results dict."""
    import torch

    from hqseg_ray.bench.report import derive, write_report
    from hqseg_ray.bench.system import load_avg, machine_info

    chosen = list(SCENARIOS) if scenarios == ["all"] else list(scenarios or DEFAULT_SCENARIOS)
    unknown = [s for s in chosen if s not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if data_dir is None:
        from hqseg_ray.model.registry import default_cache_dir

        data_dir = default_cache_dir() / "bench-data"
    torch.set_num_threads(settings.torch_threads)
    t0 = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    model, note, small = _prepare_models(out)
    ctx = Context(settings, out, Path(data_dir), model, note, small)
    timings, loads = {}, {}
    try:
        for name in SCENARIOS:
            if name not in chosen:
                continue
            if progress:
                progress(f"[{time.perf_counter() - t0:6.1f} s] scenario {name} ...")
            ts = time.perf_counter()
            loads[name] = load_avg()
            try:
                RUNNERS[name](ctx)
            except Exception as exc:  # noqa: BLE001 -- one failed scenario must not hide the others
                logger.exception("scenario %s failed", name)
                ctx.not_measured[name] = f"failed: {exc.__class__.__name__}: {str(exc)[:400]}"
            timings[name] = round(time.perf_counter() - ts, 1)
    finally:
        ctx.close()
    results = {
        "command": command, "mode": settings.mode, "started_at": started,
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - t0, 1), "machine": machine_info(), "model": note,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
        "scenarios_run": [n for n in SCENARIOS if n in chosen], "scenario_seconds": timings,
        "load_avg_1m_at_scenario_start": loads, "scenarios": ctx.results, "not_measured": dict(ctx.not_measured),
    }
    for name in SCENARIOS:
        if name not in chosen:
            results["not_measured"].setdefault(name, "scenario not selected (--scenarios)")
    results.update(derive(ctx.results))
    write_report(results, out)
    return results
