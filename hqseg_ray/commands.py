"""Subcommands that belong to no single feature module."""

from __future__ import annotations

import argparse


class ValidateCommand:
    """``hqseg validate CONFIG``: check a config, and its manifest, without running anything.

    Every problem is reported at once: config keys and values, manifest reading errors, per
    video (unless ``--no-probe``) whether it opens and whether its prompts fit it, and for a job
    config whether ``output.path`` is writable (a probe object is created and deleted) and, on a
    multi-node cluster (``--address`` / ``RAY_ADDRESS``), that a local output is declared shared.
    """

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="YAML config file")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value by its dotted key (repeatable)")
        p.add_argument("--no-probe", action="store_true",
                       help="check the manifest's rows without opening the videos")
        p.add_argument("--no-output-check", action="store_true",
                       help="do not write (and delete) a probe object at output.path")
        p.add_argument("--address", default=None,
                       help="Ray cluster the job will run on (default: $RAY_ADDRESS; none: a local Ray, one node)")

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
        output = data.get("output") if isinstance(data.get("output"), dict) else None
        if not problems and output is not None and not args.no_output_check:
            problems += self._check_output(data, args.address)
        if problems:
            print(f"{args.config}: {len(problems)} problem(s):")
            for p in problems:
                print(f"  - {p}")
            return 1
        extra = f"; manifest {manifest!r}: {checked} video(s) checked" if manifest else ""
        print(f"{args.config}: OK{extra}")
        return 0

    @staticmethod
    def _check_output(data: dict, address) -> list[str]:
        """The output location is writable; a local one on a multi-node cluster is declared shared."""
        import os

        from hqseg_ray.config import JobConfig
        from hqseg_ray.storage import open_store

        try:
            config = JobConfig.model_validate(data)
            store = open_store(config.output.path)
            store.check_writable()
        except Exception as exc:  # noqa: BLE001 -- reported with the other problems
            return [f"output.path: {exc}"]
        address = address or os.environ.get("RAY_ADDRESS")
        if not store.local or config.output.shared or not address:
            return []
        import ray

        from hqseg_ray.pipeline.placement import cluster_nodes_summary, local_output_problem

        started = not ray.is_initialized()
        try:
            if started:
                ray.init(address=address, log_to_driver=False)
            problem = local_output_problem(config, store, *cluster_nodes_summary(config))
        except Exception as exc:  # noqa: BLE001
            return [f"--address {address!r}: cannot reach the Ray cluster to check output.path: {exc}"]
        finally:
            if started and ray.is_initialized():
                ray.shutdown()
        return [problem] if problem else []

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
