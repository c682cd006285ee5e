"""The bulk labeling job on Ray Data: ``build_pipeline(config, rows)`` and ``run_job(config)``."""

from hqseg_ray.pipeline.build import build_pipeline
from hqseg_ray.pipeline.job import JobSummary, run_job

__all__ = ["JobSummary", "build_pipeline", "run_job"]
