"""``hqseg doctor``: one command to run on a GPU node before a big job.

Checks, in order, and prints what to fix for each problem:

1. torch, its CUDA build and the driver that build needs, against the node's driver and GPUs;
   that CUDA initialises and sees the GPUs (``hqseg_ray/model/gpu.py``);
2. what Ray sees: the GPUs and accelerator type Ray detects on this node, and, when a cluster is
   reachable (``--address`` / ``RAY_ADDRESS``), the GPUs and ``accelerator_type:*`` labels of every
   node and whether the config's ``compute.accelerator_type`` is among them;
3. the checkpoint: baked into the image, cached, or reachable with the credentials we have (one
   1-byte range request), its size and sha256 (published by the server, or computed for a local file);
4. a one-frame encode and decode of the configured model on the configured device, timed.

On a machine without an NVIDIA driver (a laptop, CI) the GPU checks report what they would check
on a GPU node and do not fail (``--require-gpu`` makes them fail). Exit code 1 when anything blocks
the job.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
_TAG = {OK: "[ OK ]", WARN: "[WARN]", FAIL: "[FAIL]", SKIP: "[SKIP]"}


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def model_and_compute(data: dict) -> tuple[dict, dict]:
    """(model section, compute section) of a job / model / hqseg serve config or a Ray Serve config."""
    if "applications" in data:
        for app in data["applications"]:
            if app.get("import_path") == "hqseg_ray.serve.app:build_app":
                from hqseg_ray.serve.app import resolve_args

                args = resolve_args(app.get("args"))
                return args.get("model") or {}, {}
        return {}, {}
    return data.get("model") or {}, data.get("compute") or {}


# ------------------------------------------------------------------------------------------ checks
def check_cuda(require_gpu: bool) -> tuple[list[Check], object]:
    from hqseg_ray.model.gpu import cuda_report

    r = cuda_report()
    build = f"CUDA {r.torch_cuda}" if r.torch_cuda else "CPU-only"
    need = r.required_driver
    checks = [Check("torch", OK if r.torch_cuda else WARN,
                    f"torch {r.torch_version}, built for {build}" + (f"; needs NVIDIA driver >= {need}" if need else ""),
                    "" if r.torch_cuda else "a CPU-only torch cannot use a GPU: install the CUDA build (deploy/Dockerfile)")]
    if not r.driver and not r.gpus:
        status = FAIL if require_gpu else SKIP
        checks.append(Check("driver/GPU", status,
                            "no NVIDIA driver or GPU on this machine; on a GPU node this checks: the driver "
                            f"(nvidia-smi) is >= {need or 'what torch needs'}, CUDA initialises, and torch sees "
                            "every GPU the node has",
                            r.fix() if status == FAIL else ""))
        return checks, r
    checks.append(Check("driver", FAIL if r.driver_too_old else OK,
                        f"NVIDIA driver {r.driver or '?'}; GPUs: {', '.join(r.gpus) or 'none listed'}",
                        r.fix() if r.driver_too_old else ""))
    if r.cuda_available:
        import torch

        n = torch.cuda.device_count()
        names = [torch.cuda.get_device_name(i) for i in range(n)]
        caps = sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(n)})
        status = OK if n else FAIL
        checks.append(Check("CUDA", status, f"CUDA initialises; torch sees {n} GPU(s): {', '.join(names)} "
                            f"(compute capability {', '.join(caps)}; bf16 and TF32 need >= 8.0)",
                            "" if n else "no GPU visible to this process: check CUDA_VISIBLE_DEVICES"))
        if n and min(float(c) for c in caps) < 8.0:
            checks.append(Check("GPU generation", WARN, "a GPU older than Ampere: bfloat16/TF32 fall back to slow paths",
                                "use dtype: float16 and tf32: false on this GPU"))
    else:
        checks.append(Check("CUDA", FAIL, f"CUDA does not initialise: {r.describe()}", r.fix()))
    return checks, r


def check_ray(address: Optional[str], accelerator_type: Optional[str]) -> list[Check]:
    checks = []
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        mgr = get_accelerator_manager_for_resource("GPU")
        n, kind = mgr.get_current_node_num_accelerators(), mgr.get_current_node_accelerator_type()
        if n:
            checks.append(Check("Ray on this node", OK, f"Ray detects {n} GPU(s), accelerator_type {kind!r}"))
        else:
            checks.append(Check("Ray on this node", SKIP, "Ray detects no GPU here; on a GPU node this shows the "
                                "GPU count and accelerator_type Ray gives the node (e.g. 'H100')"))
        if n and accelerator_type and kind != accelerator_type:
            checks.append(Check("accelerator type", FAIL, f"this node is {kind!r}, the config asks for {accelerator_type!r}",
                                "set compute.accelerator_type to this node's type, or run on the intended nodes"))
    except Exception as exc:  # noqa: BLE001 - Ray internals moved: report, do not crash
        checks.append(Check("Ray on this node", WARN, f"cannot ask Ray's GPU detection: {exc}"))
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        checks.append(Check("Ray cluster", SKIP, "no cluster given (--address or RAY_ADDRESS); with one this "
                            "lists every node's GPUs and accelerator_type labels and checks the config's "
                            f"compute.accelerator_type ({accelerator_type or 'not set'}) is among them"))
        return checks
    import ray

    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        labels = {k.split(":", 1)[1] for n in nodes for k in n["Resources"] if k.startswith("accelerator_type:")}
        gpus = sum(n["Resources"].get("GPU", 0) for n in nodes)
        checks.append(Check("Ray cluster", OK, f"{len(nodes)} live node(s), {gpus:g} GPU(s), accelerator types "
                            f"{sorted(labels) or 'none'}"))
        if accelerator_type and accelerator_type not in labels:
            checks.append(Check("accelerator type", WARN, f"no live node has accelerator_type:{accelerator_type} "
                                "(fine if the autoscaler starts such nodes from zero)",
                                "check that a node type of the cluster declares it (cluster/*.yaml resources, "
                                "rayStartParams.resources on KubeRay)"))
    except Exception as exc:  # noqa: BLE001
        checks.append(Check("Ray cluster", FAIL, f"cannot connect to {address!r}: {exc}",
                            "check the address (ray://host:10001 or the head's GCS address)"))
    finally:
        if ray.is_initialized():
            ray.shutdown()
    return checks


def check_checkpoint(model: dict) -> tuple[list[Check], Optional[Path]]:
    """Where the weights come from, whether they are there or reachable, size and sha256."""
    from hqseg_ray.model import registry
    from hqseg_ray.model.fetch import FetchError, probe, sha256_file
    from hqseg_ray.model.official import OFFICIAL_CHECKPOINTS, baked_checkpoint

    mtype, ref = model.get("type", "vit_b"), model.get("checkpoint", "auto")
    pinned = model.get("checkpoint_sha256")
    if ref is None:
        return [Check("checkpoint", WARN, f"{mtype}: random weights (checkpoint: null)", "masks are meaningless")], None
    local: Optional[Path] = None
    url = None
    if ref == "auto" and mtype == "toy":
        local = registry.SHIPPED_TOY_CHECKPOINT
    elif ref == "auto":
        local = baked_checkpoint(mtype)
        url = OFFICIAL_CHECKPOINTS[mtype].url
    elif "://" not in ref or ref.startswith("file://"):
        local = Path(ref[len("file://"):] if ref.startswith("file://") else ref).expanduser()
    else:
        url = ref
    if local is None and url:
        cached = registry.cached_path(url, model.get("cache_dir"))
        local = cached if cached.is_file() else None
    if local is not None:
        if not local.is_file():
            return [Check("checkpoint", FAIL, f"{mtype}: {local} not found", "fix model.checkpoint")], None
        digest = sha256_file(local)
        bad = pinned and digest != pinned.lower()
        return [Check("checkpoint", FAIL if bad else OK,
                      f"{mtype}: {local} ({local.stat().st_size} bytes), sha256 {digest}"
                      + (f" != pinned {pinned}" if bad else (" (matches the pin)" if pinned else
                                                             "; pin it with model.checkpoint_sha256")),
                      "the file is not the one pinned: delete it to fetch again" if bad else "")], local
    if url.startswith(("s3://", "gs://")):
        return [Check("checkpoint", SKIP, f"{mtype}: {url} is read through pyarrow at load time; the model check "
                      "below loads it")], None
    try:
        info = probe(url)
    except FetchError as exc:
        return [Check("checkpoint", FAIL, f"{mtype}: {exc}",
                      "open egress to the host, set HF_TOKEN / HQSEG_CHECKPOINT_AUTH, or bake the weights into "
                      "the image (docs/deploy.md, 'Checkpoints')")], None
    size, sha = info.headers.get("size"), pinned or info.published_sha256
    official = OFFICIAL_CHECKPOINTS.get(mtype) if ref == "auto" else None
    wrong = official is not None and size is not None and size != official.size_bytes
    return [Check("checkpoint", FAIL if wrong else OK,
                  f"{mtype}: {url} reachable, {size} bytes, sha256 {sha or 'not published'}"
                  + (f", revision {info.revision}" if info.revision else "")
                  + "; not on this node yet (fetched once per node on first load)",
                  f"expected {official.size_bytes} bytes" if wrong else "")], None


def check_model(model: dict, have_weights: bool, gpu_usable: bool) -> list[Check]:
    """Load the configured model and time one frame: encode, then one box prompt decoded."""
    import numpy as np
    import torch

    from hqseg_ray.config import ModelConfig
    from hqseg_ray.model.engine import SegEngine
    from hqseg_ray.prompts import Prompt

    cfg = ModelConfig.model_validate(model)
    if not have_weights and cfg.checkpoint is not None:
        return [Check("one-frame run", SKIP, f"{cfg.type}: the checkpoint is not on this machine; on the node "
                      "this loads it and times a one-frame encode and decode on "
                      f"{cfg.device} ({cfg.dtype}{', tf32' if cfg.tf32 else ''})")]
    if cfg.device.startswith("cuda") and not gpu_usable:
        note = f" (CPU here: model.device is {cfg.device!r}, which needs a GPU node)"
        cfg = cfg.model_copy(update={"device": "cpu"})
    else:
        note = ""
    t0 = time.perf_counter()
    engine = SegEngine.load(cfg)
    load_s = time.perf_counter() - t0
    frame = np.full((480, 640, 3), 40, np.uint8)
    frame[120:360, 200:440] = (200, 60, 60)
    prompt = Prompt(frame=0, box=[200, 120, 440, 360])
    timings = []
    for _ in range(2):  # the first pass includes one-off costs (kernel selection, compile)
        sync = torch.cuda.synchronize if engine.device.type == "cuda" else (lambda: None)
        t1 = time.perf_counter()
        emb = engine.encode(frame[None])
        sync()
        t2 = time.perf_counter()
        masks, scores, _ = engine.decode(emb, [prompt])
        sync()
        timings.append((t2 - t1, time.perf_counter() - t2))
    iou = float((masks[0] & (frame[..., 0] == 200)).sum() / max(1, (masks[0] | (frame[..., 0] == 200)).sum()))
    (enc, dec) = timings[-1]
    return [Check("one-frame run", OK, f"{engine.label} on {engine.device}{note}: load {load_s:.1f} s, encode "
                  f"{enc * 1000:.0f} ms, decode (1 box) {dec * 1000:.0f} ms (second pass); score "
                  f"{float(scores[0]):.2f}, IoU with the drawn box {iou:.2f}")]


# ------------------------------------------------------------------------------------------ command
class DoctorCommand:
    """``hqseg doctor [--config CONFIG]``: check this node before a big job; exit 1 when something blocks it."""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="job / model / serve config whose model (and compute) to check "
                       "(default: configs/label-gpu.yaml's model section: vit_h)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value by its dotted key (repeatable)")
        p.add_argument("--model", help="shortcut: check this model type (toy, vit_tiny, vit_b, vit_l, vit_h)")
        p.add_argument("--address", help="Ray cluster to inspect (default: $RAY_ADDRESS; none: skip)")
        p.add_argument("--require-gpu", action="store_true", help="a machine without a usable GPU is a failure")
        p.add_argument("--skip-model", action="store_true", help="do not load the model / time a frame")
        p.add_argument("--json", action="store_true", help="print the checks as JSON")

    def run(self, args: argparse.Namespace) -> int:
        from hqseg_ray.config import load_yaml

        if args.config:
            data = load_yaml(args.config, args.overrides)
        else:
            data = {"model": {"type": "vit_h", "checkpoint": "auto", "device": "cuda", "dtype": "bfloat16",
                              "tf32": True}, "compute": {"accelerator_type": "H100"}}
        model, compute = model_and_compute(data)
        if args.model:
            model = {"type": args.model, "checkpoint": "auto", "device": model.get("device", "auto")}
        checks, report = check_cuda(args.require_gpu)
        checks += check_ray(args.address, compute.get("accelerator_type"))
        ck, local = check_checkpoint(model)
        checks += ck
        if not args.skip_model:
            try:
                checks += check_model(model, local is not None, bool(report.cuda_available))
            except Exception as exc:  # noqa: BLE001 - the doctor reports, it does not crash
                checks.append(Check("one-frame run", FAIL, f"{exc.__class__.__name__}: {exc}",
                                    "see the error; `hqseg validate` the config"))
        failed = [c for c in checks if c.status == FAIL]
        if args.json:
            print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
        else:
            for c in checks:
                print(f"{_TAG[c.status]} {c.name}: {c.detail}")
                if c.fix:
                    print(f"       fix: {c.fix}")
            print(f"\n{len(failed)} problem(s) block a job on this node." if failed
                  else "\nNothing blocks a job on this node" + (" (GPU checks skipped: no GPU here)."
                                                               if any(c.status == SKIP for c in checks) else "."))
        return 1 if failed else 0
