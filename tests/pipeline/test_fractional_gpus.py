"""Fractional GPUs per segment actor (``compute.gpus_per_actor: 0.5``): two actors share one GPU.

Starts its own Ray (``address="local"`` with one fake GPU) and ends only what it started."""

import json
import shutil
import tempfile

import pytest
from pydantic import ValidationError

from tests.pipeline.conftest import job_config
from tests.pipeline.test_job_ray import GOOD, statuses


def test_fractional_gpus_per_actor_validate():
    from hqseg_ray.config import ComputeConfig

    assert ComputeConfig(gpus_per_actor=0.5).gpus_per_actor == 0.5
    assert ComputeConfig(gpus_per_actor=0.25).gpus_per_actor == 0.25
    assert ComputeConfig(gpus_per_actor=2).gpus_per_actor == 2
    with pytest.raises(ValidationError, match="gpus_per_actor.*1.5.*fraction of one GPU or a whole number"):
        ComputeConfig(gpus_per_actor=1.5)


@pytest.mark.ray
@pytest.mark.e2e
def test_two_actors_share_one_gpu(job_inputs, small_model_ckpt, tmp_path):
    import ray

    from hqseg_ray.pipeline import run_job

    _, rows = job_inputs
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows if r["video_id"] in GOOD))
    temp = tempfile.mkdtemp(prefix="hqray-", dir="/tmp")  # short: Ray's socket paths are limited to 107 bytes
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    try:
        config = job_config(str(manifest), tmp_path / "out", small_model_ckpt, gpus_per_actor=0.5,
                            segment_actors_min=2, segment_actors_max=2)
        summary = run_job(config, progress=False)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert summary.ok == len(GOOD)
    workers = {w for s in statuses(tmp_path / "out").values() for w in s["workers"].split(",")}
    assert len(workers) == 2                                        # both actors did work ...
    assert {w.split(":")[3] for w in workers} == {"gpu0"}           # ... on the one (fake) GPU they share
