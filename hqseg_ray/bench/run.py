"""``run_bench``: every scenario of one benchmark run, on the same frames, in one process tree.

Steps: copy the model file (a checkpoint replaced mid-run must not change the model), generate
or reuse the synthetic videos, run the selected scenarios in a fixed order, then derive the
contract numbers (efficiency, speed-up over naive, RSS ratio, actor scaling) from what was
measured in this run only.
"""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

logger = logging.getLogger(__name__)

SCENARIOS = ("engine", "naive", "objects", "speed", "vit_tiny", "vit_b", "feed", "job", "actors", "length", "serve",
             "compile")
# compile runs only when named: compiling the encoder on a CPU takes minutes
DEFAULT_SCENARIOS = tuple(s for s in SCENARIOS if s != "compile")

# small random-weight ViT that stands in for the toy model when its checkpoint is missing
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
    job_videos: int = 8                    # 768 frames: the fixed start-up is a smaller share
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
    feed_frames: int = 12                  # 1080p frames tracked per row of the CPU feed projection
    feed_objects: tuple[int, ...] = (1, 5, 20)
    seed: int = 7

    @classmethod
    def quick(cls) -> "Settings":
        return cls(mode="quick", job_videos=1, job_frames=24, chunk_frames=16, overlap=2, engine_frames=8,
                   naive_frames=3, scaling_frames=2, ab_frames=4, ab_reps=1, ab_decode_prompts=4, vit_tiny_frames=1,
                   vit_tiny_objects=(1, 4), length_seconds=(2.0, 20.0), serve_seconds=3.0,
                   feed_frames=4)

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


def run_bench(out: str | Path, settings: Settings, scenarios: Optional[list[str]] = None, command: str = "",
              data_dir: Optional[str | Path] = None, progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run the scenarios and write ``bench.json``, ``bench.md`` and the plots under ``out``;
    returns the results dict."""
    import torch

    from hqseg_ray.bench.report import derive, write_report
    from hqseg_ray.bench.scenarios import RUNNERS
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
