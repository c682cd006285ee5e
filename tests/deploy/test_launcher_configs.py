"""Every Ray cluster launcher config under cluster/ passes Ray's own validation (one test per file)."""

from __future__ import annotations

import copy

import pytest

from hqseg_ray import manifests

from .helpers import ROOT, load_yaml, rel

LAUNCHER_CONFIGS = manifests.launcher_configs(ROOT)
#: Accelerator types the project's configs may ask for (Ray's names, ray.util.accelerators).
ACCELERATORS = {"A100", "H100", "H200"}


def _prepared(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_launcher_configs_found():
    names = {p.name for p in LAUNCHER_CONFIGS}
    assert {"aws-a100.yaml", "aws-h100.yaml", "aws-h200.yaml", "gcp-a100.yaml", "gcp-h100.yaml",
            "gcp-h200.yaml"} <= names


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=rel)
def test_launcher_config_passes_ray_validation(path):
    """ray up's own checks: prepare_config (defaults, docker, node types) then validate_config (schema)."""
    config = load_yaml(path)
    assert path.read_text().startswith("# ray up "), f"{rel(path)}: first line must be the command that runs it"
    prepared = _prepared(config)

    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head must be CPU-only"
    workers = {name: t for name, t in types.items() if name != prepared["head_node_type"]}
    gpu_types = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types, f"{rel(path)}: no GPU worker type"
    for name, node_type in gpu_types.items():
        assert node_type.get("min_workers", 0) == 0, f"{name}: GPU workers must scale from 0"
        assert node_type["max_workers"] >= 1
        labels = {k.split(":", 1)[1] for k in node_type["resources"] if k.startswith("accelerator_type:")}
        assert len(labels) == 1 and labels <= ACCELERATORS, f"{name}: accelerator_type label {labels}"
    assert prepared["idle_timeout_minutes"] > 0
    assert any(remote.endswith("/configs") for remote in prepared["file_mounts"]), "configs are not mounted"
    assert prepared["docker"]["image"] == manifests.image_ref(ROOT)


def test_accelerator_labels_are_rays_names():
    from ray.util.accelerators import accelerators

    known = {v for k, v in vars(accelerators).items() if k.startswith("NVIDIA_")}
    assert ACCELERATORS <= known


@pytest.mark.parametrize("mutate, match", [
    (lambda c: c.update(idle_timeout_minute=5), "Additional properties"),
    (lambda c: c.update(max_workers="four"), "is not of type"),
    (lambda c: c["available_node_types"]["head"].update(resource={"CPU": 1}), "Additional properties"),
    (lambda c: c.update(head_node_type="nope"), "head_node_type"),
], ids=["typo-top-level", "string-for-int", "typo-node-type", "missing-head-type"])
def test_ray_validation_rejects_wrong_fields(mutate, match):
    """The check above is real: Ray's validation rejects what a typo would produce."""
    config = load_yaml(ROOT / "cluster" / "aws-a100.yaml")
    mutate(config)
    with pytest.raises(Exception, match=match):
        _prepared(config)


@pytest.mark.parametrize("name, machine, accelerator, gpus", [
    ("aws-h100.yaml", "p5.48xlarge", "H100", 8),
    ("gcp-h100.yaml", "a3-highgpu-8g", "H100", 8),
])
def test_h100_configs(name, machine, accelerator, gpus):
    """H100 clusters for jobs with compute.accelerator_type: H100 (configs/label-gpu.yaml)."""
    from hqseg_ray.config import load_job_config

    config = _prepared(load_yaml(ROOT / "cluster" / name))
    (gpu_type,) = [t for t in config["available_node_types"].values() if t["resources"].get("GPU")]
    nc = gpu_type["node_config"]
    assert nc.get("InstanceType", nc.get("machineType")) == machine
    assert gpu_type["resources"]["GPU"] == gpus and gpu_type["resources"][f"accelerator_type:{accelerator}"] == 1
    job = load_job_config(ROOT / "configs" / "label-gpu.yaml", ["input.manifest=null"])
    assert job.compute.accelerator_type == accelerator


def test_every_aws_node_names_its_ami():
    """No ImageId means Ray's built-in default (an Ubuntu 18.04 Deep Learning AMI with an old driver)."""
    for path in LAUNCHER_CONFIGS:
        config = load_yaml(path)
        if config["provider"]["type"] != "aws":
            continue
        for name, t in config["available_node_types"].items():
            image = t["node_config"].get("ImageId", "")
            assert image and image.lower() != "latest_dlami", f"{rel(path)}: {name} has no explicit ImageId"
