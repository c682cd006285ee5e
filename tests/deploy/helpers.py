"""Shared by the deploy tests: where the files are, and the validators built from real schemas."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import yaml

from hqseg_ray import manifests

ROOT = manifests.project_root()
SCHEMAS = Path(__file__).parent / "schemas"
#: Kubernetes version whose OpenAPI schemas (from kubernetes-validate) check the pod templates.
K8S_VERSION = "1.30.0"
K8S_DEFINITIONS_URI = "https://kubernetes.io/api/_definitions.json"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@lru_cache(maxsize=None)
def _k8s_strict_dir() -> Path:
    import kubernetes_validate  # dev extra; callers importorskip it first

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    return base / f"v{K8S_VERSION}-local-strict"


@lru_cache(maxsize=None)
def kuberay_validator(kind: str):
    """jsonschema validator for one KubeRay kind: RayJob, RayService or RayCluster.

    The KubeRay part is hand-written (schemas/kuberay-v1.schema.json, provenance inside); its pod
    templates, metadata and resources resolve to Kubernetes' own OpenAPI schemas (strict).
    """
    import jsonschema
    from referencing import Registry, Resource

    k8s_defs = json.loads((_k8s_strict_dir() / "_definitions.json").read_text())
    kuberay = json.loads((SCHEMAS / "kuberay-v1.schema.json").read_text())
    registry = Registry().with_resources([
        (K8S_DEFINITIONS_URI, Resource.from_contents(k8s_defs)),
        (kuberay["$id"], Resource.from_contents(kuberay)),
    ])
    cls = jsonschema.validators.validator_for(kuberay)
    cls.check_schema(kuberay)
    if kind not in kuberay["$defs"]:
        raise ValueError(f"no schema for kind {kind!r}")
    return cls({"$ref": f"{kuberay['$id']}#/$defs/{kind}"}, registry=registry)


@lru_cache(maxsize=None)
def k8s_validator(kind: str, api_version: str = "v1"):
    """Strict validator for a core Kubernetes kind (e.g. PersistentVolumeClaim), from kubernetes-validate."""
    import jsonschema
    from referencing import Registry, Resource

    k8s_defs = json.loads((_k8s_strict_dir() / "_definitions.json").read_text())
    schema = json.loads((_k8s_strict_dir() / f"{kind.lower()}-{api_version}.json").read_text())
    registry = Registry().with_resources([(K8S_DEFINITIONS_URI, Resource.from_contents(k8s_defs))])
    return jsonschema.validators.validator_for(schema)(schema, registry=registry)


def schema_errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def unknown_serve_keys(model_cls, data: Any, where: str = "") -> Iterator[str]:
    """Keys of ``data`` that ``model_cls`` (a Serve pydantic schema) does not define, recursively.

    ServeDeploySchema accepts unknown keys on purpose (forward compatibility), so a typo such as
    ``max_replica`` would silently do nothing; this walk catches it.
    """
    import typing

    from pydantic import BaseModel

    def models_of(annotation) -> list[type]:
        args = typing.get_args(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for a in args for m in models_of(a)]

    if not isinstance(data, dict):
        return
    fields = model_cls.model_fields
    names = {name: f for name, f in fields.items()} | {f.alias: f for f in fields.values() if f.alias}
    for key, value in data.items():
        field = names.get(key)
        if field is None:
            yield f"{where}{key}: not a field of {model_cls.__name__}"
            continue
        models = models_of(field.annotation)
        if not models:
            continue
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            sub = f"{where}{key}[{i}]." if isinstance(value, list) else f"{where}{key}."
            yield from unknown_serve_keys(models[0], item, sub)
