"""Subcommands that belong to no single feature module."""

from __future__ import annotations

import argparse


class ValidateCommand:
    """``hqseg validate CONFIG``: load a config with overrides and report every error at once."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="YAML config file")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value by its dotted key (repeatable)")

    def run(self, args: argparse.Namespace) -> int:
        from pydantic import ValidationError

        from hqseg_ray.config import load_yaml, validate_config_dict

        data = load_yaml(args.config, args.overrides)
        try:
            problems = validate_config_dict(data)
        except ValidationError as exc:
            problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        if problems:
            print(f"{args.config}: {len(problems)} problem(s):")
            for p in problems:
                print(f"  - {p}")
            return 1
        print(f"{args.config}: OK")
        return 0
