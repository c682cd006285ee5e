"""``hqseg label`` and ``hqseg demo``: argument handling and Ray start-up only."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

def demo_config_path() -> Path | None:
    """configs/label-demo.yaml of a source checkout (next to the package, or in the working folder)."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        path = root / "configs" / "label-demo.yaml"
        if path.is_file():
            return path
    return None


def _add_ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (default: $RAY_ADDRESS, else start an embedded local Ray)")
    p.add_argument("--no-progress", action="store_true", help="hide Ray Data's progress bars")


def start_ray(address: str | None, config) -> bool:
    """Join a cluster or start an embedded one; returns True when this process started Ray.

    On an embedded Ray without GPUs the segment actors ask for no GPU (they would wait forever)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=True)
        return False
    ray.init(address="local", include_dashboard=False, log_to_driver=True)
    from hqseg_ray.pipeline.build import min_cpus_needed

    resources = ray.cluster_resources()
    if resources.get("GPU", 0) == 0 and config.compute.gpus_per_actor > 0:
        logger.warning("no GPUs on this machine: segment actors run on the CPU (compute.gpus_per_actor set to 0)")
        config.compute.gpus_per_actor = 0
    need, have = min_cpus_needed(config), resources.get("CPU", 0)
    if need > have:
        ray.shutdown()
        raise ValueError(f"this machine has {have:g} CPUs but the job needs {need:g} (compute.segment_actors_min x "
                         "compute.cpus_per_actor + compute.decode_cpus + 0.2): lower compute.cpus_per_actor or "
                         "compute.segment_actors_min")
    return True


class LabelCommand:
    """``hqseg label CONFIG [--set key=value ...] [--address ADDR]``."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="job YAML (see configs/label-demo.yaml)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value by its dotted key, e.g. --set output.path=out (repeatable)")
        p.add_argument("--corrections", metavar="JSONL", default=None,
                       help="merge a review page's corrections (OUT/corrections.jsonl) into the manifest's "
                       "prompts and label the corrected videos again (same as --set input.corrections=JSONL)")
        _add_ray_args(p)

    def config(self, args: argparse.Namespace):
        from hqseg_ray.config import load_job_config

        overrides = list(args.overrides) + ([f"input.corrections={args.corrections}"] if args.corrections else [])
        return load_job_config(args.config, overrides)

    def run(self, args: argparse.Namespace) -> int:
        return run_label(self.config(args), args.address, not args.no_progress)


def run_label(config, address=None, progress=True) -> int:
    import ray

    from hqseg_ray.pipeline.job import run_job

    started = start_ray(address, config)
    try:
        summary = run_job(config, progress=progress)
    finally:
        if started:
            ray.shutdown()
    if config.model.type == "toy":
        print("model: toy (toy, trained on synthetic scenes) -- masks show the system working, not SAM-HQ quality")
    print(summary.text())
    if config.output.fail_on_error and summary.failed:
        return 1
    return 0


class DemoCommand:
    """``hqseg demo``: synthetic videos -> the labeling job with the toy model -> overlays."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--dir", default="hqseg-demo", help="where the demo writes its videos and outputs")
        p.add_argument("--videos", type=int, default=3, help="synthetic videos to generate")
        p.add_argument("--frames", type=int, default=48, help="frames per video")
        p.add_argument("--seed", type=int, default=7, help="seed of the synthetic videos")
        _add_ray_args(p)

    def run(self, args: argparse.Namespace) -> int:
        from hqseg_ray.config import JobConfig, load_yaml, validate_config_dict
        from hqseg_ray.synth import write_dataset

        root = Path(args.dir).resolve()
        manifest = write_dataset(root / "data", videos=args.videos, frames=args.frames, seed=args.seed)
        print(f"demo: wrote {args.videos} synthetic videos with box prompts on frame 0 to {root / 'data'}")
        overrides = [f"input.manifest={manifest}", f"output.path={root / 'out'}"]
        config_path = demo_config_path()
        data = load_yaml(config_path, overrides) if config_path else demo_config_dict(overrides)
        problems = validate_config_dict(data)
        if problems:
            raise ValueError("demo config: " + "; ".join(problems))
        config = JobConfig.model_validate(data)
        rc = run_label(config, args.address, not args.no_progress)
        out = root / "out"
        print(f"demo: overlay videos and PNG previews: {out / 'overlay'}/<video_id>.mp4|.png")
        print(f"demo: ground truth (DAVIS layout) to score with `hqseg eval`: {root / 'data'}")
        if config_path:
            print(f"demo: the same job again: hqseg label {config_path} " + " ".join(f"--set {o}" for o in overrides))
        return rc


def demo_config_dict(overrides) -> dict:
    """The demo config when the repository's configs/ folder is not next to the package
    (a wheel install); kept equal to configs/label-demo.yaml by a test."""
    from hqseg_ray.config import apply_overrides

    data = {
        "model": {"type": "toy", "checkpoint": "auto", "device": "auto", "decode_batch": 4},
        "input": {"manifest": "hqseg-demo/data/manifest.jsonl"},
        "chunking": {"chunk_frames": 24, "overlap": 4},
        "stitch": {"mechanism": "relay"},
        "compute": {"segment_actors_min": 1, "segment_actors_max": 1, "gpus_per_actor": 0, "torch_threads": 2},
        "output": {"path": "hqseg-demo/out", "formats": ["overlay"]},
    }
    return apply_overrides(data, overrides)
