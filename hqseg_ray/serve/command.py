"""``hqseg serve CONFIG``: start the online endpoint and block until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import time

logger = logging.getLogger(__name__)


def plan_serve(data: dict) -> tuple[str, int, list[tuple[str, str, dict, list]]]:
    """A config dict -> (host, port, [(app name, route prefix, build_app args, deployment overrides)]).

    ``data`` is an hqseg config (``model``/``serve``/``tracker`` sections) or a Serve config file
    (``http_options`` and ``applications``).
    """
    if "applications" in data:
        http = data.get("http_options") or {}
        apps = [(a.get("name", "default"), a.get("route_prefix", "/"), a.get("args") or {},
                 a.get("deployments") or []) for a in data["applications"]]
        for a in data["applications"]:
            if a.get("import_path") != "hqseg_ray.serve.app:build_app":
                raise ValueError(f"application {a.get('name')!r}: import_path must be "
                                 f"hqseg_ray.serve.app:build_app, got {a.get('import_path')!r}")
        http_options(data)  # the bind address and the apps' serve.host agree
        return http.get("host", "127.0.0.1"), int(http.get("port", 8000)), apps
    from hqseg_ray.config import ServeConfig
    from hqseg_ray.serve.app import resolve_args

    data = resolve_args(data)
    cfg = ServeConfig.model_validate(data.get("serve") or {})
    return cfg.host, cfg.port, [(cfg.app_name, cfg.route_prefix, data, [])]


def http_options(data: dict) -> dict:
    """``serve.start(http_options=...)`` of a config: host, port and ``request_timeout_s``.

    In a Serve config file, each application's ``args.serve.host`` must equal
    ``http_options.host``: the application decides from it whether API keys are required.
    """
    if "applications" in data:
        http = dict(data.get("http_options") or {})
        host = http.get("host", "127.0.0.1")
        for a in data["applications"]:
            app_host = ((a.get("args") or {}).get("serve") or {}).get("host", "127.0.0.1")
            if app_host != host:
                raise ValueError(f"application {a.get('name')!r}: args.serve.host {app_host!r} must equal "
                                 f"http_options.host {host!r} (it decides whether API keys are required)")
        return {k: v for k, v in http.items() if k in ("host", "port", "request_timeout_s", "keep_alive_timeout_s")}
    from hqseg_ray.config import ServeConfig
    from hqseg_ray.serve.app import resolve_args

    cfg = ServeConfig.model_validate(resolve_args(data).get("serve") or {})
    opts: dict = {"host": cfg.host, "port": cfg.port}
    if cfg.request_timeout_s:
        opts["request_timeout_s"] = cfg.request_timeout_s
    return opts


def _stop(signum, frame):
    raise KeyboardInterrupt


class ServeCommand:
    """Starts Serve on an embedded local Ray (or joins ``--address``) and runs the application.

    CONFIG is either an hqseg config (sections ``model``, ``serve``, ``tracker``) or a Serve config
    file (``applications: [...]``, e.g. configs/serve.yaml) whose applications use
    ``hqseg_ray.serve.app:build_app``.
    """

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="YAML config: hqseg sections, or a Serve config file")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value by its dotted key (repeatable)")
        p.add_argument("--address", default=None,
                       help="Ray cluster to join (default: start an embedded local Ray)")

    def run(self, args: argparse.Namespace) -> int:
        from hqseg_ray.config import load_yaml

        data = load_yaml(args.config, args.overrides)
        host, port, apps = plan_serve(data)
        http = http_options(data)

        import ray
        from ray import serve

        from hqseg_ray.serve.app import build_app

        built = [(name, prefix, build_app(a, deps)) for name, prefix, a, deps in apps]
        signal.signal(signal.SIGTERM, _stop)  # docker stop / kubectl delete: shut down like Ctrl-C
        # "local": a new embedded Ray even when another local cluster runs here (ray.init() would join it)
        ray.init(address=args.address or "local")
        serve.start(http_options=http)  # no-op for a cluster's running Serve
        try:
            for name, prefix, application in built:
                serve.run(application, name=name, route_prefix=prefix)
            logger.info("hqseg serve: listening on http://%s:%d (GET /healthz, API under /v1, docs at "
                        "/docs); Ctrl-C stops", host, port)
            while True:
                time.sleep(1.0)
        except KeyboardInterrupt:
            logger.info("hqseg serve: stopping")
        finally:
            if args.address:  # a shared cluster: remove only our applications
                for name, _, _ in built:
                    serve.delete(name)
            else:
                serve.shutdown()
            ray.shutdown()
        return 0
