"""``hqseg bench``: engine, naive loop, bulk job, scaling and Serve scenarios measured in one run.

    from hqseg_ray.bench import run_bench, Settings
"""

from hqseg_ray.bench.command import BenchCommand
from hqseg_ray.bench.run import SCENARIOS, Settings, run_bench

__all__ = ["BenchCommand", "SCENARIOS", "Settings", "run_bench"]
