"""Serve click latency: the Serve application on this process's Ray, driven by the project's own
load test (``hqseg_ray.serve.loadtest.run_load``: each client clicks on cached images, next
click as soon as the answer arrives)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

logger = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_latency(model: dict, clients: tuple[int, ...], seconds: float, images: int = 4,
                  size: tuple[int, int] = (240, 320)) -> dict:
    """p50/p99 click latency (ms) for each number of concurrent clients. Ray must be up."""
    try:
        import httpx
        from ray import serve

        from hqseg_ray.serve.app import build_app
        from hqseg_ray.serve.loadtest import run_load
    except ImportError as exc:
        return {"not_measured": f"Serve is not importable here: {exc}"}
    port = _free_port()
    settings = {"port": port, "num_gpus": 0, "num_cpus": 1}
    t0 = time.perf_counter()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"model": model, "serve": settings}), name="hqseg", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=120) as c:
            if c.get("/healthz").status_code != 200:
                return {"not_measured": "the Serve application did not become healthy"}
        start_s = time.perf_counter() - t0
        out = {"start_s": round(start_s, 1)}
        for n in clients:
            rep = asyncio.run(run_load(url, clients=n, seconds=seconds, images=images, size=size))
            out[str(n)] = {k: rep.get(k) for k in ("requests", "requests_per_s", "p50_ms", "p90_ms", "p99_ms", "max_ms",
                                                   "5xx", "transport_errors", "mean_decode_batch")}
        return out
    except Exception as exc:  # noqa: BLE001 -- a benchmark records why a number is missing
        logger.warning("serve scenario failed: %s", exc)
        return {"not_measured": f"Serve failed: {exc.__class__.__name__}: {str(exc)[:300]}"}
    finally:
        try:
            serve.shutdown()
        except Exception:  # noqa: BLE001
            pass
