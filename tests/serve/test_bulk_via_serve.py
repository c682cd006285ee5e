"""The bulk job with ``segment.backend: serve`` sends its chunks to the running deployment and
writes the same masks as the tracker run locally (which the pipeline tests show equal to the
job with its own actors)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.dataset as pads
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.ray]


def test_bulk_job_through_serve(server, client, model_config, engine, tmp_path):
    from hqseg_ray.config import JobConfig
    from hqseg_ray.pipeline import run_job
    from hqseg_ray.synth import write_dataset
    from hqseg_ray.track import segment_video

    manifest = write_dataset(tmp_path / "data", videos=2, frames=12, seed=21, size=(64, 96))
    rows = [json.loads(line) for line in Path(manifest).read_text().splitlines()]
    config = JobConfig.model_validate({
        "model": model_config, "input": {"manifest": str(manifest)},
        "chunking": {"chunk_frames": 8, "overlap": 2},
        "compute": {"gpus_per_actor": 0, "cpus_per_actor": 0.25, "decode_cpus": 0.25},
        "segment": {"backend": "serve", "serve_app": "hqseg"},
        "output": {"path": str(tmp_path / "out")},
    })
    before = client.get("/v1/stats").json()["engine"]["track_chunks"]
    summary = run_job(config, progress=False)
    assert summary.ok == 2 and summary.failed == 0
    assert client.get("/v1/stats").json()["engine"]["track_chunks"] - before >= 4  # 2 videos x 2 chunks

    table = pads.dataset(os.path.join(tmp_path, "out", "masks"), format="parquet", partitioning="hive").to_table()
    got = sorted((str(r["video_id"]), r["frame_index"], r["object_id"], r["rle_counts"]) for r in table.to_pylist())
    want = sorted((row["video_id"], fr.frame_index, oid, rle["counts"])
                  for row in rows
                  for fr in segment_video(row["video"], row["prompts"], engine, config, video_id=row["video_id"])
                  for oid, rle in zip(fr.object_ids, fr.rles))
    assert got and got == want


def test_segment_chunk_via_serve_matches_local(server, engine):
    """The client function runs the same tracker remotely: identical ChunkResult masks."""
    import numpy as np

    from hqseg_ray.serve.client import segment_chunk_via_serve
    from hqseg_ray.track import track_chunk
    from tests.serve.conftest import scene

    frames = np.stack([np.roll(scene(60), 3 * t, axis=1) for t in range(5)])
    prompts = [{"object_id": 7, "frame": 0, "box": [20, 10, 120, 90]}]
    remote = segment_chunk_via_serve("hqseg", frames, list(range(5)), prompts, None, None, video_id="v")
    local = track_chunk(engine, frames, list(range(5)), prompts, None, None, video_id="v")
    assert remote.frame_indices == local.frame_indices
    rle = lambda res: [{t: (e.rle or {}).get("counts") for t, e in f.items()} for f in res.entries]  # noqa: E731
    assert rle(remote) == rle(local) and any(rle(local)[0].values())
