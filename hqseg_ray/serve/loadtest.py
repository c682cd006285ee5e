"""A bounded load test of the click path: N concurrent clients for T seconds on cached images.

    python -m hqseg_ray.serve.loadtest --url http://127.0.0.1:8000 --clients 32 --seconds 30

Uploads ``--images`` generated images once, then every client loops: one click (a random
foreground point, sometimes with a box) on a random cached image, next click as soon as the
answer arrives. Reports requests, requests/s, p50/p90/p99/max latency, the status counts and the
number of 5xx answers as JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import platform
import sys
import time
from collections import Counter
from typing import Optional

import numpy as np

logger = logging.getLogger(__name__)


def _png(seed: int, h: int, w: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    for _ in range(4):
        y, x = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
        img[y:y + h // 4, x:x + w // 4] = rng.integers(100, 255, size=3, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _percentile(values: list[float], q: float) -> Optional[float]:
    return float(np.percentile(values, q)) if values else None


async def run_load(url: str, clients: int = 8, seconds: float = 3.0, images: int = 4,
                   size: tuple[int, int] = (480, 640), seed: int = 0, timeout_s: float = 60.0,
                   api_key: Optional[str] = None) -> dict:
    """Run the load test against ``url``; returns the report dict (latencies in milliseconds).
    ``api_key``: sent as ``Authorization: Bearer`` (servers with serve.api_keys_*)."""
    import httpx

    h, w = size
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits, headers=headers) as http:
        ids = []
        for i in range(images):
            r = await http.post("/v1/images", files={"image": (f"{i}.png", _png(seed + i, h, w), "image/png")})
            r.raise_for_status()
            ids.append(r.json()["image_id"])
        stats_before = (await http.get("/v1/stats")).json().get("engine", {})
        latencies: list[float] = []
        statuses: Counter = Counter()
        errors: Counter = Counter()
        deadline = time.perf_counter() + seconds

        async def client(k: int) -> None:
            rng = np.random.default_rng(seed * 1000 + k)
            while time.perf_counter() < deadline:
                x, y = float(rng.uniform(0, w - 1)), float(rng.uniform(0, h - 1))
                prompt: dict = {"points": [[x, y]], "labels": [1]}
                if rng.random() < 0.3:
                    prompt["box"] = [max(0.0, x - 40), max(0.0, y - 40), min(w, x + 40), min(h, y + 40)]
                t0 = time.perf_counter()
                try:
                    r = await http.post(f"/v1/images/{ids[int(rng.integers(len(ids)))]}/segment",
                                        json={"prompts": [prompt]})
                    statuses[r.status_code] += 1
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] += 1
                    continue
                latencies.append((time.perf_counter() - t0) * 1000.0)

        t_start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        wall = time.perf_counter() - t_start
        stats_after = (await http.get("/v1/stats")).json().get("engine", {})
    batches = stats_after.get("decode_batches", 0) - stats_before.get("decode_batches", 0)
    decoded = stats_after.get("decode_requests", 0) - stats_before.get("decode_requests", 0)
    return {
        "url": url, "clients": clients, "seconds": round(wall, 2), "images": images, "image_size": [h, w],
        "requests": len(latencies), "requests_per_s": round(len(latencies) / wall, 2) if wall else None,
        "p50_ms": _round(_percentile(latencies, 50)), "p90_ms": _round(_percentile(latencies, 90)),
        "p99_ms": _round(_percentile(latencies, 99)), "max_ms": _round(max(latencies) if latencies else None),
        "status_counts": {str(k): v for k, v in sorted(statuses.items())},
        "5xx": sum(v for k, v in statuses.items() if k >= 500),
        "transport_errors": dict(errors),
        "mean_decode_batch": round(decoded / batches, 2) if batches else None,
        "engine_busy": round((stats_after.get("decode_seconds", 0.0) - stats_before.get("decode_seconds", 0.0))
                             / wall, 2) if wall else None,
        "mean_batch_ms": round(1000 * (stats_after.get("decode_seconds", 0.0) - stats_before.get("decode_seconds", 0.0))
                               / batches, 1) if batches else None,
        "machine": f"{platform.machine()} {platform.processor() or ''} {_cpus()} CPUs".strip(),
    }


def _round(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v, 1)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hqseg_ray.serve.loadtest", description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--api-key", default=None, help="API key of the server (default: $HQSEG_API_KEY)")
    args = p.parse_args(argv)
    import os

    report = run_load(args.url, args.clients, args.seconds, args.images, (args.height, args.width),
                      api_key=args.api_key or os.environ.get("HQSEG_API_KEY"))
    report = asyncio.run(report)
    report["command"] = "python -m hqseg_ray.serve.loadtest " + " ".join(argv if argv is not None else sys.argv[1:])
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 1 if report["5xx"] or report["transport_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
