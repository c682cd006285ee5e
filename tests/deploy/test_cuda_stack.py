"""The CUDA stack is consistent: the torch CUDA build the image pins, the driver it needs, and the node
images every launcher config names all agree with the one table in docs/deploy.md ("CUDA stack")."""

from __future__ import annotations

import re

import pytest

from hqseg_ray import manifests
from hqseg_ray.model.gpu import min_driver, version_tuple

from .helpers import ROOT, load_yaml, rel

TABLE_MARKER = "<!-- cuda-stack:"


def cuda_table(text: str) -> dict[str, str]:
    """docs/deploy.md's CUDA-stack table: image (backticks stripped) -> driver cell."""
    lines = text[text.index(TABLE_MARKER):].splitlines()[1:]
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        image, driver, _ = [c.strip() for c in line.strip("|").split("|")]
        rows[image.replace("`", "")] = driver
    return rows


def driver_major(cell: str) -> int | None:
    m = re.search(r"\d+", cell)
    return int(m.group()) if m and not cell.startswith("none") else None


def torch_cuda_build(dockerfile: str) -> str:
    m = re.search(r"^ARG TORCH_CUDA=(cu\d+)\s*$", dockerfile, re.MULTILINE)
    assert m, "deploy/Dockerfile: no ARG TORCH_CUDA=cuXYZ line"
    return m.group(1)


def cuda_version(build: str) -> str:
    digits = build[2:]
    return f"{digits[:-1]}.{digits[-1]}"  # cu130 -> 13.0, cu128 -> 12.8


def node_images(config: dict) -> list[tuple[str, str, bool]]:
    """(node type, image, has GPUs) of every node type of a launcher config."""
    out = []
    for name, node_type in config["available_node_types"].items():
        nc = node_type["node_config"]
        images = [nc["ImageId"]] if "ImageId" in nc else [
            d["initializeParams"]["sourceImage"] for d in nc.get("disks", []) if d.get("boot")]
        assert len(images) == 1, f"{name}: names no image explicitly (Ray would pick its old default)"
        out.append((name, images[0], node_type["resources"].get("GPU", 0) > 0))
    return out


def stack_problems(table: dict[str, str], dockerfile: str, configs: dict[str, dict]) -> list[str]:
    """Every way the files disagree with the table (empty when consistent)."""
    problems = []
    build = torch_cuda_build(dockerfile)
    if f"torch build {build} (CUDA {cuda_version(build)})" not in table:
        problems.append(f"deploy/Dockerfile: TORCH_CUDA={build} is not the torch build in the table {sorted(table)}")
    need = min_driver(cuda_version(build))
    if need is None:
        problems.append(f"no known minimum driver for CUDA {cuda_version(build)}")
        return problems
    for path, config in configs.items():
        for name, image, gpu in node_images(config):
            if image not in table:
                problems.append(f"{path}: {name} uses {image}, which the CUDA-stack table does not list")
                continue
            major = driver_major(table[image])
            if gpu and (major is None or major < version_tuple(need)[0]):
                problems.append(f"{path}: {name} runs {image} (driver {table[image]}), torch {build} needs >= {need}")
    return problems


def _files():
    table = cuda_table((ROOT / "docs" / "deploy.md").read_text())
    dockerfile = (ROOT / manifests.DOCKERFILE).read_text()
    configs = {rel(p): load_yaml(p) for p in manifests.launcher_configs(ROOT)}
    return table, dockerfile, configs


def test_cuda_stack_is_consistent():
    table, dockerfile, configs = _files()
    assert len(configs) >= 6
    assert stack_problems(table, dockerfile, configs) == []


def test_dockerfile_installs_the_pinned_build_and_checks_it():
    dockerfile = (ROOT / manifests.DOCKERFILE).read_text()
    build = torch_cuda_build(dockerfile)
    assert 'download.pytorch.org/whl/${TORCH_CUDA}' in dockerfile
    assert "assert v == '${TORCH_CUDA}'" in dockerfile  # the build fails on any other torch CUDA
    assert build == "cu130" or cuda_version(build).startswith("12.")


@pytest.mark.parametrize("breakage, expected", [
    (lambda t, d, c: (t, d.replace("ARG TORCH_CUDA=cu130", "ARG TORCH_CUDA=cu128"), c), "TORCH_CUDA=cu128"),
    (lambda t, d, c: ({**t, next(k for k in t if "nvidia-580" in k): "550"}, d, c), "needs >= 580"),
    (lambda t, d, c: (t, d, _set_aws_image(c, "ami-0123456789abcdef0")), "does not list"),
    (lambda t, d, c: (t, d, _drop_aws_image(c)), "names no image explicitly"),
], ids=["other-torch-build", "old-driver", "unlisted-ami", "no-image-id"])
def test_checker_catches_each_inconsistency(breakage, expected):
    table, dockerfile, configs = breakage(*_files())
    try:
        problems = "\n".join(stack_problems(table, dockerfile, configs))
    except AssertionError as exc:  # a config that names no image
        problems = str(exc)
    assert expected in problems, problems


def _aws(configs):
    return next(c for p, c in configs.items() if p.startswith("cluster/aws-"))


def _set_aws_image(configs, image):
    _aws(configs)["available_node_types"]["head"]["node_config"]["ImageId"] = image
    return configs


def _drop_aws_image(configs):
    for t in _aws(configs)["available_node_types"].values():
        t["node_config"].pop("ImageId", None)
    return configs


def test_table_drivers_meet_torch_requirement_for_known_gcp_family():
    table, _, _ = _files()
    family = "projects/deeplearning-platform-release/global/images/family/common-cu129-ubuntu-2204-nvidia-580"
    assert family.endswith(f"nvidia-{driver_major(table[family])}")  # the family name states its driver
