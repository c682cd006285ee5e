"""KubeRay manifests under deploy/ validate against the RayJob / RayService / RayCluster schema.

The KubeRay part of the schema is hand-written from KubeRay's API types (no published CRD is
available offline; provenance in schemas/kuberay-v1.schema.json); everything inside a pod template
is checked against Kubernetes' own OpenAPI schema (kubernetes-validate, strict).
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import yaml

from hqseg_ray import manifests

from .helpers import ROOT, k8s_validator, kuberay_validator, load_yaml, rel, schema_errors, unknown_serve_keys

pytest.importorskip("kubernetes_validate", reason="pip install -e '.[dev]' (kubernetes-validate)")
# Ray Serve's own pydantic models emit deprecation warnings on import; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

K8S_MANIFESTS = manifests.k8s_manifests(ROOT)
KUBERAY_MANIFESTS = manifests.kuberay_manifests(ROOT)
GPU_LIMIT = "nvidia.com/gpu"


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec" if doc["kind"] == "RayJob" else "rayClusterConfig"]


def test_manifests_found():
    kinds = {load_yaml(p)["kind"] for p in KUBERAY_MANIFESTS}
    assert {"RayJob", "RayService"} <= kinds


def test_kuberay_schema_is_a_valid_json_schema():
    import jsonschema

    schema = json.loads((ROOT / "tests/deploy/schemas/kuberay-v1.schema.json").read_text())
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert "HAND-WRITTEN" in schema["$comment"]


@pytest.mark.parametrize("path", K8S_MANIFESTS, ids=rel)
def test_manifest_validates(path):
    assert path.read_text().startswith("# kubectl apply "), f"{rel(path)}: first line must be the command"
    for doc in yaml.safe_load_all(path.read_text()):
        kind = doc["kind"]
        validator = kuberay_validator(kind) if doc["apiVersion"] == "ray.io/v1" else k8s_validator(kind)
        assert schema_errors(validator, doc) == []


@pytest.mark.parametrize("path", KUBERAY_MANIFESTS, ids=rel)
def test_cluster_shape(path):
    """CPU-only head; GPU worker groups for A100 and H200 from 0, with GPU limits, tolerations, selectors."""
    doc = load_yaml(path)
    spec = _cluster_spec(doc)
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("num-gpus") == "0"
    for c in head["template"]["spec"]["containers"]:
        assert GPU_LIMIT not in c["resources"].get("limits", {}), "the head must not hold a GPU"

    accelerators = set()
    for group in spec["workerGroupSpecs"]:
        name = group["groupName"]
        assert group["minReplicas"] == 0, f"{name}: must scale from 0"
        assert group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"], name
        pod = group["template"]["spec"]
        assert pod["nodeSelector"], f"{name}: no nodeSelector"
        assert any(t["key"] == GPU_LIMIT for t in pod["tolerations"]), f"{name}: no GPU toleration"
        (container,) = [c for c in pod["containers"] if c["name"] == "ray-worker"]
        assert int(container["resources"]["limits"][GPU_LIMIT]) >= 1
        assert container["resources"]["limits"] == container["resources"]["requests"]
        declared = json.loads(json.loads(group["rayStartParams"]["resources"]))
        accelerators |= {k.split(":", 1)[1] for k in declared if k.startswith("accelerator_type:")}
    assert accelerators == {"A100", "H100", "H200"}


def _pod_templates(doc: dict) -> dict[str, dict]:
    spec = _cluster_spec(doc)
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    pods.update({g["groupName"]: g["template"]["spec"] for g in spec["workerGroupSpecs"]})
    return pods


@pytest.mark.parametrize("path", KUBERAY_MANIFESTS, ids=rel)
def test_dev_shm_on_every_ray_pod(path):
    """Ray's object store lives in /dev/shm; a container's default is 64 MiB. Head and every worker
    group mount a memory-backed emptyDir there."""
    for name, pod in _pod_templates(load_yaml(path)).items():
        shm = {v["name"] for v in pod.get("volumes", []) if v.get("emptyDir", {}).get("medium") == "Memory"}
        for c in pod["containers"]:
            mounts = {m["name"] for m in c.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"}
            assert mounts & shm, f"{rel(path)}: {name}/{c['name']} has no memory-backed /dev/shm"


def test_kuberay_version_stated_covers_the_fields_used():
    """backoffLimit (RayJob retries) arrived in KubeRay v1.2.0; the docs must not promise v1.1."""
    doc = load_yaml(ROOT / "deploy" / "rayjob.yaml")
    text = (ROOT / "docs" / "deploy.md").read_text()
    m = re.search(r"KubeRay operator \*\*v(\d+)\.(\d+)\*\* or newer", text)
    assert m, "docs/deploy.md must state the minimum KubeRay operator version"
    stated = (int(m.group(1)), int(m.group(2)))
    if "backoffLimit" in doc["spec"]:
        assert stated >= (1, 2), f"backoffLimit needs KubeRay >= 1.2, docs say {stated}"
    assert "v1.1 or newer" not in text


def test_shipped_manifests_run_real_models_not_the_toy():
    """RayJob and RayService start from the GPU configs (vit_h); the toy stays in the demo configs."""
    import shlex

    from hqseg_ray.config import ModelConfig, load_job_config

    argv = shlex.split(load_yaml(ROOT / "deploy" / "rayjob.yaml")["spec"]["entrypoint"])
    assert argv[2] == "/home/ray/hqseg/configs/label-gpu.yaml"
    job = load_job_config(ROOT / "configs" / "label-gpu.yaml", ["input.manifest=null"])
    assert job.model.type == "vit_h" and job.model.dtype == "bfloat16" and job.model.tf32
    assert job.model.device == "cuda" and 128 <= job.chunking.chunk_frames <= 256
    assert job.model.decode_batch >= job.auto.points_per_side ** 2  # a discovery grid in one call
    serve = yaml.safe_load(load_yaml(ROOT / "deploy" / "rayservice.yaml")["spec"]["serveConfigV2"])
    for app in serve["applications"]:
        model = ModelConfig.model_validate(app["args"]["model"])
        assert model.type == "vit_h" and model.device == "cuda" and model.tf32
    for name in ("cluster/README.md", "deploy/rayjob.yaml", "deploy/rayservice.yaml", "configs/serve.yaml",
                 "configs/label-gpu.yaml"):
        assert "label-demo" not in (ROOT / name).read_text() and "type: toy" not in (ROOT / name).read_text(), name


def test_rayjob_lifecycle():
    doc = load_yaml(ROOT / "deploy" / "rayjob.yaml")
    spec = doc["spec"]
    assert spec["entrypoint"].startswith("hqseg label ")
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0


def test_rayjob_entrypoint_is_a_valid_job_that_fits_the_worker_groups():
    """The entrypoint's config (as baked into the image) plus its --set overrides is a valid job
    config whose GPU actor pool can grow, and whose accelerator type (if any) a worker group provides."""
    import shlex

    from hqseg_ray import config as config_module

    load_job_config = getattr(config_module, "load_job_config", None)
    if load_job_config is None:
        pytest.skip("hqseg_ray.config.load_job_config not available")
    doc = load_yaml(ROOT / "deploy" / "rayjob.yaml")
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[:2] == ["hqseg", "label"]
    image_root = "/home/ray/hqseg/"  # WORKDIR of deploy/Dockerfile
    assert argv[2].startswith(image_root)
    overrides = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
    job = load_job_config(ROOT / argv[2][len(image_root):], overrides)

    compute = job.compute
    assert compute.gpus_per_actor >= 1
    assert compute.segment_actors_min < compute.segment_actors_max, "the pool must be able to grow"
    groups = _cluster_spec(doc)["workerGroupSpecs"]
    gpus = {}
    for group in groups:
        declared = json.loads(json.loads(group["rayStartParams"]["resources"]))
        (accelerator,) = [k.split(":", 1)[1] for k in declared if k.startswith("accelerator_type:")]
        (container,) = group["template"]["spec"]["containers"]
        gpus[accelerator] = group["maxReplicas"] * int(container["resources"]["limits"][GPU_LIMIT])
    if compute.accelerator_type is not None:
        assert compute.accelerator_type in gpus
        assert compute.segment_actors_max <= gpus[compute.accelerator_type]
    else:
        assert compute.segment_actors_max <= sum(gpus.values())


def test_rayservice_serve_config_is_a_valid_serve_deploy_schema():
    from ray.serve.schema import ServeDeploySchema

    doc = load_yaml(ROOT / "deploy" / "rayservice.yaml")
    serve = yaml.safe_load(doc["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(serve)
    assert list(unknown_serve_keys(ServeDeploySchema, serve)) == []
    apps = {a["name"]: a for a in serve["applications"]}
    gpu_deployments = [d for app in apps.values() for d in app.get("deployments", [])
                       if d.get("ray_actor_options", {}).get("num_gpus")]
    assert gpu_deployments, "no GPU deployment in serveConfigV2"
    for d in gpu_deployments:
        assert d["autoscaling_config"]["max_replicas"] > d["autoscaling_config"]["min_replicas"], d["name"]

    # The application args are hqseg config sections; the app's own resolver validates them.
    app_module = pytest.importorskip("hqseg_ray.serve.app")
    for app in apps.values():
        if app["import_path"] == "hqseg_ray.serve.app:build_app":
            app_module.resolve_args(app.get("args"))


# --- the validation is real: wrong fields are rejected ------------------------------------------

def _worker(doc):
    return _cluster_spec(doc)["workerGroupSpecs"][0]


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["spec"].update(shutdownAfterJobFinish=True), "'shutdownAfterJobFinish' was unexpected"),
    (lambda d: d["spec"].update(ttlSecondsAfterFinished="600"), "is not of type 'integer'"),
    (lambda d: _worker(d).update(maxReplicas="4"), "is not of type 'integer'"),
    (lambda d: _worker(d).update(minReplicas=-1), "less than the minimum"),
    (lambda d: _worker(d)["rayStartParams"].update({"num-gpus": 1}), "is not of type 'string'"),
    (lambda d: _worker(d).pop("groupName"), "'groupName' is a required property"),
    (lambda d: _cluster_spec(d).update(enableInTreeAutoscaler=True), "'enableInTreeAutoscaler' was unexpected"),
    (lambda d: _worker(d)["template"]["spec"]["containers"][0].update(resource={}), "'resource' was unexpected"),
    (lambda d: _worker(d)["template"]["spec"]["tolerations"][0].update(efect="NoSchedule"), "'efect' was unexpected"),
    (lambda d: _worker(d)["template"]["spec"].update(nodeSelector=["a100"]), "is not of type 'object'"),
    (lambda d: d["spec"].update(submissionMode="K8sMode"), "is not one of"),
], ids=["typo-spec", "string-ttl", "string-maxReplicas", "negative-minReplicas", "int-rayStartParam",
        "missing-groupName", "typo-cluster-spec", "typo-container", "typo-toleration",
        "list-nodeSelector", "bad-enum"])
def test_rayjob_schema_rejects_wrong_fields(mutate, expected):
    doc = copy.deepcopy(load_yaml(ROOT / "deploy" / "rayjob.yaml"))
    mutate(doc)
    errors = schema_errors(kuberay_validator("RayJob"), doc)
    assert any(expected in e for e in errors), errors


def test_rayservice_schema_rejects_wrong_fields():
    doc = load_yaml(ROOT / "deploy" / "rayservice.yaml")
    doc["spec"]["rayClusterSpec"] = doc["spec"].pop("rayClusterConfig")  # RayJob's name, wrong here
    doc["spec"]["serveConfigV2"] = {"applications": []}  # must be a YAML string, not a mapping
    errors = "\n".join(schema_errors(kuberay_validator("RayService"), doc))
    assert "'rayClusterSpec' was unexpected" in errors and "is not of type 'string'" in errors


def test_serve_config_typos_are_caught():
    """ServeDeploySchema ignores unknown keys by design; the key walk reports them."""
    from ray.serve.schema import ServeDeploySchema

    serve = load_yaml(ROOT / "configs" / "serve.yaml")
    deployment = serve["applications"][0]["deployments"][0]
    deployment["autoscaling_config"]["max_replica"] = 4
    deployment["ray_actor_options"]["num_gpu"] = 1
    ServeDeploySchema.model_validate(serve)  # accepted...
    problems = list(unknown_serve_keys(ServeDeploySchema, serve))  # ...but reported here
    assert any("max_replica" in p for p in problems) and any("num_gpu" in p for p in problems)
