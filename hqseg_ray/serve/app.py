"""The Serve application: ``build_app(args) -> Application``.

Used three ways:

* ``hqseg serve configs/serve-demo.yaml`` (this package's CLI, see ``command.py``);
* ``serve run hqseg_ray.serve.app:build_app config=configs/serve-demo.yaml``;
* a Serve config file (``configs/serve.yaml``: ``serve deploy`` / KubeRay RayService) whose
  application has ``import_path: hqseg_ray.serve.app:build_app`` and ``args`` holding the hqseg
  sections (``model``, ``serve``, ``tracker``); its ``deployments`` entries override the options
  set here, by the names ``SegEngineDeployment`` and ``HQSegAPI``.
"""

from __future__ import annotations

from typing import Any, Optional

from hqseg_ray.config import ModelConfig, ServeConfig, TrackingConfig, load_yaml, validate_config_dict

OPTION_KEYS = {"num_replicas", "max_ongoing_requests", "max_queued_requests", "autoscaling_config",
               "ray_actor_options", "user_config", "health_check_period_s", "health_check_timeout_s",
               "graceful_shutdown_timeout_s", "graceful_shutdown_wait_loop_s"}


def resolve_args(args: Optional[dict]) -> dict:
    """Application args -> the hqseg config dict (sections ``model``, ``serve``, ``tracker``...).

    ``args`` is either those sections themselves, or ``{"config": PATH, "overrides": [...]}``
    (``serve run hqseg_ray.serve.app:build_app config=PATH`` passes strings).
    """
    args = dict(args or {})
    if "config" in args:
        overrides = args.pop("overrides", []) or []
        if isinstance(overrides, str):
            overrides = [o for o in overrides.split(",") if o]
        data = load_yaml(args.pop("config"), overrides)
        data.update(args)
    else:
        data = args
    problems = validate_config_dict(data)
    if problems:
        raise ValueError("serve config has problems:\n  " + "\n  ".join(problems))
    return data


def engine_options(cfg: ServeConfig) -> dict:
    """Deployment options of the engine from the ``serve`` section."""
    return {
        "ray_actor_options": {"num_gpus": cfg.num_gpus, "num_cpus": cfg.num_cpus},
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "max_queued_requests": cfg.max_queued_requests,
        "autoscaling_config": {"min_replicas": cfg.min_replicas, "max_replicas": cfg.max_replicas,
                               "initial_replicas": max(cfg.min_replicas, 1),
                               "target_ongoing_requests": cfg.target_ongoing_requests},
    }


def build_app(args: Optional[dict] = None, deployment_overrides: Optional[list[dict]] = None):
    """The hqseg Serve application: ``HQSegAPI`` (ingress) -> ``SegEngineDeployment``.

    Args:
        args: see :func:`resolve_args`.
        deployment_overrides: ``deployments`` entries of a Serve config file (name + options),
            applied on top (``hqseg serve`` uses it; ``serve run/deploy`` apply them themselves).
    """
    from hqseg_ray.serve.api import HQSegAPI
    from hqseg_ray.serve.engine_deployment import SegEngineDeployment

    data = resolve_args(args)
    model = ModelConfig.model_validate(data.get("model") or {})
    cfg = ServeConfig.model_validate(data.get("serve") or {})
    overrides = {d["name"]: {k: v for k, v in d.items() if k in OPTION_KEYS}
                 for d in (deployment_overrides or [])}
    eng_opts = engine_options(cfg)
    if "num_replicas" in overrides.get("SegEngineDeployment", {}):
        eng_opts.pop("autoscaling_config")
    engine = SegEngineDeployment.options(**{**eng_opts, **overrides.get("SegEngineDeployment", {})}).bind(
        model.model_dump(), cfg.batch_wait_timeout_s)
    api_opts: dict[str, Any] = {"num_replicas": 1, "max_ongoing_requests": cfg.api_max_ongoing_requests,
                                "max_queued_requests": cfg.api_max_queued_requests}
    tracking = TrackingConfig.model_validate({k: data[k] for k in ("tracker", "auto", "stitch") if data.get(k)})
    api = HQSegAPI.options(**{**api_opts, **overrides.get("HQSegAPI", {})}).bind(
        engine, cfg.model_dump(), tracking.model_dump())
    return api
