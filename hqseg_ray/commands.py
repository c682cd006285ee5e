"""Subcommands that belong to no single feature module."""

from __future__ import annotations

import argparse


class ValidateCommand:
    """``hqseg validate CONFIG``: check a config, and its manifest, without running anything.

    Every problem is reported at once: config keys and values, manifest reading errors, and per
    video (unless ``--no-probe``) whether it opens and whether its prompts fit it.
    """

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="YAML config file")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value by its dotted key (repeatable)")
        p.add_argument("--no-probe", action="store_true",
                       help="check the manifest's rows without opening the videos")

    def run(self, args: argparse.Namespace) -> int:
        from hqseg_ray.config import load_yaml, validate_config_dict

        data = load_yaml(args.config, args.overrides)
        problems = validate_config_dict(data)
        manifest = (data.get("input") or {}).get("manifest") if isinstance(data.get("input"), dict) else None
        checked = 0
        if not problems and manifest:
            rows, manifest_problems = self._check_manifest(manifest, not args.no_probe)
            problems += manifest_problems
            checked = rows
        if problems:
            print(f"{args.config}: {len(problems)} problem(s):")
            for p in problems:
                print(f"  - {p}")
            return 1
        extra = f"; manifest {manifest!r}: {checked} video(s) checked" if manifest else ""
        print(f"{args.config}: OK{extra}")
        return 0

    @staticmethod
    def _check_manifest(manifest: str, probe: bool) -> tuple[int, list[str]]:
        from hqseg_ray.prompts import load_manifest, validate_prompts

        try:
            rows = load_manifest(manifest)
        except (ValueError, OSError) as exc:
            return 0, [f"input.manifest: {exc}"]
        problems: list[str] = []
        for row in rows:
            info = None
            if probe:
                from hqseg_ray.video import VideoError, probe_video

                try:
                    info = probe_video(row.video)
                except VideoError as exc:
                    problems.append(f"video {row.video_id!r}: {exc}")
                    continue
            try:
                validate_prompts(row, info)
            except ValueError as exc:
                problems.append(str(exc))
        return len(rows), problems
