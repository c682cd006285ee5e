"""One source of truth for the deploy files: Ray version, image name, and the RayService Serve config.

The project's own files decide; everything under ``cluster/`` and ``deploy/`` follows them:

- the Ray version is the ``ray[...]==X`` pin in ``pyproject.toml``;
- the container image is ``IMAGE_REPO:<project version>-ray<ray version>`` (``image_ref``);
- ``spec.serveConfigV2`` of ``deploy/rayservice.yaml`` is ``configs/serve.yaml`` verbatim, less its
  leading comment block.

``python -m hqseg_ray.manifests render`` rewrites the generated parts (serveConfigV2 and the image
tags) in place; ``python -m hqseg_ray.manifests check`` lists every drift and exits 1 if there is any
(the tests in ``tests/deploy/`` call the same functions). Works on a source checkout; no Ray import.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

#: Where the image is pushed. Change it here, then run ``render``: every manifest follows.
IMAGE_REPO = "ghcr.io/example-org/hqseg-ray"
SERVE_CONFIG = "configs/serve.yaml"
RAYSERVICE = "deploy/rayservice.yaml"
DOCKERFILE = "deploy/Dockerfile"
GENERATED_NOTE = (
    "# GENERATED from configs/serve.yaml by `python -m hqseg_ray.manifests render`; edit that file."
)

_RAY_PIN = re.compile(r"""["']ray(?:\[[^\]]*\])?==([0-9][0-9a-zA-Z.+-]*)["']""")
_PROJECT_VERSION = re.compile(r'^version\s*=\s*"([^"]+)"', re.MULTILINE)
_SERVE_BLOCK = re.compile(r"^(?P<indent>[ ]*)serveConfigV2:[ ]*\|[-+]?[ ]*$", re.MULTILINE)
_VERSION_SPELLINGS = [re.compile(p, re.MULTILINE) for p in (
    r"((?<![\w-])ray(?:\[[^\]]*\])?==)[0-9][0-9a-zA-Z.+-]*?([\s\"')]|$)",
    r"(ray\.__version__ == ')[0-9][^']*(')",
    r"(rayVersion:\s*\")[0-9.]+(\")",
    r"(^ARG RAY_VERSION=)\S+()",
)]
_IMAGE_TAG = re.compile(re.escape(IMAGE_REPO) + r":(?P<tag>[0-9A-Za-z_.-]+)")


def project_root() -> Path:
    """The checkout this module lives in (the folder holding ``pyproject.toml``)."""
    return Path(__file__).resolve().parent.parent


def ray_version_pin(root: Path) -> str:
    """The exact Ray version pinned in ``pyproject.toml`` (``ray[...]==X``)."""
    text = (root / "pyproject.toml").read_text()
    found = set(_RAY_PIN.findall(text))
    if len(found) != 1:
        raise ValueError(f"{root / 'pyproject.toml'}: expected exactly one ray==X pin, found {sorted(found)}")
    return found.pop()


def project_version(root: Path) -> str:
    m = _PROJECT_VERSION.search((root / "pyproject.toml").read_text())
    if not m:
        raise ValueError(f"{root / 'pyproject.toml'}: no version = \"...\" line")
    return m.group(1)


def image_tag(root: Path) -> str:
    return f"{project_version(root)}-ray{ray_version_pin(root)}"


def image_ref(root: Path) -> str:
    """The one image name every launcher config and KubeRay manifest uses."""
    return f"{IMAGE_REPO}:{image_tag(root)}"


# --------------------------------------------------------------------------------------------
# serveConfigV2
# --------------------------------------------------------------------------------------------

def serve_config_v2(serve_yaml: str) -> str:
    """The text embedded as serveConfigV2: the Serve config less its leading comments, plus a note."""
    lines = serve_yaml.splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("#")):
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join([GENERATED_NOTE, *lines]) + "\n"


def _serve_block_span(manifest: str) -> tuple[int, int, str]:
    """(start, end, indent) of the lines of the serveConfigV2 block scalar in ``manifest``."""
    m = _SERVE_BLOCK.search(manifest)
    if not m:
        raise ValueError(f"{RAYSERVICE}: no 'serveConfigV2: |' block found")
    indent = m.group("indent")
    start = end = pos = m.end() + 1
    for line in manifest[start:].splitlines(keepends=True):
        if line.strip():
            if len(line) - len(line.lstrip(" ")) <= len(indent):
                break  # back at the key's level or above: the block has ended
            end = pos + len(line)  # trailing blank lines belong to what follows
        pos += len(line)
    return start, end, indent


def embedded_serve_config(manifest: str) -> str:
    """The serveConfigV2 text as committed (de-indented), for comparison and validation."""
    start, end, indent = _serve_block_span(manifest)
    inner = indent + "  "
    return "".join(line[len(inner):] if line.startswith(inner) else line.lstrip(" ")
                   for line in manifest[start:end].splitlines(keepends=True))


def render_rayservice(manifest: str, serve_yaml: str) -> str:
    """``manifest`` with its serveConfigV2 block replaced by the rendering of ``serve_yaml``."""
    start, end, indent = _serve_block_span(manifest)
    inner = indent + "  "
    block = "".join(f"{inner}{line}\n" if line else "\n" for line in serve_config_v2(serve_yaml).splitlines())
    return manifest[:start] + block + manifest[end:]


def render_images(text: str, root: Path) -> str:
    return _IMAGE_TAG.sub(image_ref(root), text)


def render_ray_version(text: str, ray_version: str) -> str:
    """Every spelling of the Ray version in a deploy file, set to ``ray_version``."""
    for pattern in _VERSION_SPELLINGS:
        text = pattern.sub(lambda m: m.group(1) + ray_version + m.group(2), text)
    return text


# --------------------------------------------------------------------------------------------
# Files and drift
# --------------------------------------------------------------------------------------------

def launcher_configs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "cluster").rglob("*.yaml") if p.is_file())


RAY_KINDS = ("RayJob", "RayService", "RayCluster")


def k8s_manifests(root: Path) -> list[Path]:
    """Every Kubernetes manifest under ``deploy/``."""
    return sorted(p for p in (root / "deploy").rglob("*.yaml") if p.is_file())


def kuberay_manifests(root: Path) -> list[Path]:
    """The manifests under ``deploy/`` whose kind is a KubeRay custom resource."""
    kind = re.compile(r"^kind:\s*(\w+)", re.MULTILINE)
    return [p for p in k8s_manifests(root) if set(kind.findall(p.read_text())) & set(RAY_KINDS)]


def image_files(root: Path) -> list[Path]:
    """Every file that must name the project image: launcher configs and KubeRay manifests."""
    return [*launcher_configs(root), *kuberay_manifests(root)]


def render(root: Path) -> list[Path]:
    """Rewrite the generated parts in place; returns the files that changed."""
    changed = []
    ray_version = ray_version_pin(root)
    for path in [*image_files(root), root / DOCKERFILE]:
        old = path.read_text()
        new = render_ray_version(render_images(old, root), ray_version)
        if path == root / RAYSERVICE:
            new = render_rayservice(new, (root / SERVE_CONFIG).read_text())
        if new != old:
            path.write_text(new)
            changed.append(path)
    return changed


def check(root: Path) -> list[str]:
    """Every way the deploy files drifted from the project's own files (empty when none)."""
    problems: list[str] = []
    ray_version, ref = ray_version_pin(root), image_ref(root)

    for path in image_files(root):
        rel, text = path.relative_to(root), path.read_text()
        tags = _IMAGE_TAG.findall(text)
        if not tags:
            problems.append(f"{rel}: does not use the project image {ref}")
        for tag in sorted(set(tags)):
            if f"{IMAGE_REPO}:{tag}" != ref:
                problems.append(f"{rel}: image tag {tag!r}, expected {image_tag(root)!r} (run render)")
        for other in sorted(set(re.findall(r"(?<![\w-])ray(?:\[[^\]]*\])?==([0-9][0-9a-zA-Z.+-]*)", text))):
            if other != ray_version:
                problems.append(f"{rel}: pins ray=={other}, pyproject.toml pins {ray_version}")
        for other in sorted(set(re.findall(r"rayproject/ray(?:-ml)?:([0-9][0-9.]*[0-9])", text))):
            if other != ray_version:
                problems.append(f"{rel}: uses rayproject/ray:{other}, pyproject.toml pins {ray_version}")
        for other in sorted(set(re.findall(r"ray\.__version__ == '([0-9][^']*)'", text))):
            if other != ray_version:
                problems.append(f"{rel}: checks for Ray {other}, pyproject.toml pins {ray_version}")
        for other in sorted(set(re.findall(r"rayVersion:\s*['\"]?([0-9.]+)", text))):
            if other != ray_version:
                problems.append(f"{rel}: rayVersion {other}, pyproject.toml pins {ray_version}")

    dockerfile = (root / DOCKERFILE).read_text()
    m = re.search(r"^ARG RAY_VERSION=(\S+)", dockerfile, re.MULTILINE)
    if not m:
        problems.append(f"{DOCKERFILE}: no 'ARG RAY_VERSION=...' line")
    elif m.group(1) != ray_version:
        problems.append(f"{DOCKERFILE}: RAY_VERSION {m.group(1)}, pyproject.toml pins {ray_version}")

    manifest = (root / RAYSERVICE).read_text()
    if embedded_serve_config(manifest) != serve_config_v2((root / SERVE_CONFIG).read_text()):
        problems.append(f"{RAYSERVICE}: serveConfigV2 differs from {SERVE_CONFIG} (run render)")
    return problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hqseg_ray.manifests", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["render", "check", "image"],
                        help="render: rewrite generated parts; check: list drift; image: print the image name")
    parser.add_argument("--root", type=Path, default=project_root(), help="project checkout (default: this one)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.action == "image":
        print(image_ref(root))
        return 0
    if args.action == "render":
        for path in render(root):
            print(f"rewrote {path.relative_to(root)}")
    problems = check(root)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
