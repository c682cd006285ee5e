"""``hqseg`` command line. Argument handling only; each subcommand is one small class.

Subcommands are registered lazily by import path so that ``hqseg --help`` does not import torch
or Ray. A command class has ``name``, ``help``, ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    # name: ("module:Class", one-line help)
    "validate": ("hqseg_ray.commands:ValidateCommand", "check a config (and its manifest) without running it"),
    "segment": ("hqseg_ray.track.segment:SegmentCommand", "segment one video on this machine (no Ray) into Parquet masks"),
    "label": ("hqseg_ray.pipeline.cli:LabelCommand", "run a bulk labeling job on Ray (embedded or a cluster)"),
    "demo": ("hqseg_ray.pipeline.cli:DemoCommand", "synthetic videos -> labeling job with the toy model -> overlays"),
    "serve": ("hqseg_ray.serve.command:ServeCommand", "run the online endpoint (Ray Serve, HTTP /v1) until Ctrl-C"),
    "synth": ("hqseg_ray.synth.dataset:SynthCommand", "write synthetic videos with ground truth (MP4, DAVIS PNG, manifests)"),
    "train-toy": ("hqseg_ray.train.toy:TrainToyCommand", "train the toy model (toy, trained on synthetic scenes) on the CPU"),
    "eval": ("hqseg_ray.eval.command:EvalCommand", "score Parquet masks against DAVIS-layout ground truth (J, F, J&F, ID switches)"),
    "export": ("hqseg_ray.export.command:ExportCommand", "write COCO / YouTube-VIS / DAVIS PNG / overlay MP4 / CVAT / Label Studio / review-queue exports from a job's Parquet output"),
    "doctor": ("hqseg_ray.doctor:DoctorCommand", "check a GPU node before a big job: driver/CUDA/torch, Ray's GPUs and labels, checkpoint, a timed one-frame run"),
    "bench": ("hqseg_ray.bench:BenchCommand", "benchmark the engine, the naive loop, the bulk job, scaling and Serve; JSON + markdown + plots"),
}


def _load(name: str):
    target, _ = COMMANDS[name]
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)()


def build_parser(selected: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hqseg", description="High-quality video segmentation with SAM-HQ on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == selected:
            _load(name).add_arguments(p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if a in COMMANDS), None)
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(_load(args.command).run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"hqseg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
