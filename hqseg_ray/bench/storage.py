"""Object-store output vs a local folder: the same bulk job, timed both ways in one run.

    python -m hqseg_ray.bench.storage --videos 3 --frames 48 --repeats 2

Starts a real S3-compatible server (moto's server mode, the ``dev`` extra) on 127.0.0.1 and a
private local Ray, writes synthetic videos with box prompts, then runs the same job (toy model,
``output.overwrite: true``) alternately into a local folder and into ``s3://bench/<run>``,
``--repeats`` times each, and prints the wall times, their medians and the ratio s3 / local.
The endpoint and credentials reach the job the way a user passes them: ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` in the environment before Ray starts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path


def start_s3() -> tuple[object, str]:
    """A moto S3 server on a free 127.0.0.1 port, the AWS variables set for it; -> (server, endpoint)."""
    import logging

    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover
        raise SystemExit("this benchmark needs moto[server] (pip install -e '.[dev]')") from exc
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    return server, endpoint


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos", type=int, default=3)
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cpus", type=int, default=2)
    args = p.parse_args(argv)

    from hqseg_ray.bench.jobs import job_config, start_ray, stop_ray
    from hqseg_ray.pipeline import run_job
    from hqseg_ray.synth import write_dataset

    server, endpoint = start_s3()
    root = Path(tempfile.mkdtemp(prefix="hqseg-bench-storage-"))
    manifest = write_dataset(root / "data", videos=args.videos, frames=args.frames, seed=7)
    start_ray(args.cpus)
    model = {"type": "toy", "checkpoint": "auto", "device": "cpu"}
    times: dict[str, list[float]] = {"local": [], "s3": []}
    frames = {}
    try:
        for i in range(args.repeats):
            for where in ("local", "s3"):
                out = str(root / "out") if where == "local" else "s3://bench/run"
                config = job_config(manifest, out, model, chunk_frames=24, overlap=4, cpus_per_actor=1.0,
                                    decode_cpus=0.5)
                t0 = time.perf_counter()
                summary = run_job(config, progress=False)
                times[where].append(time.perf_counter() - t0)
                frames[where] = summary.frames
                if summary.ok != args.videos:
                    raise SystemExit(f"{where}: {summary.text()}")
                print(f"run {i + 1} {where:5s}: {times[where][-1]:6.1f} s  ({summary.frames} frames, "
                      f"{summary.ok} videos ok)", flush=True)
    finally:
        stop_ray()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{args.videos} videos x {args.frames} frames, toy model, {args.cpus} CPUs, S3 = moto on {endpoint}")
    print("| output | wall s (each run) | median s |")
    print("|---|---|---|")
    for k in ("local", "s3"):
        print(f"| {k} | {', '.join(f'{t:.1f}' for t in times[k])} | {med[k]:.1f} |")
    print(f"s3 / local (medians): {med['s3'] / med['local']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
