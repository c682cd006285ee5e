"""The bulk job with ``segment.backend: serve`` sends its chunks to the running deployment and
writes the same masks as the job with its own segment actors."""

from __future__ import annotations

import os

import pyarrow.dataset as pads
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.ray]


def read_masks(out) -> list[tuple]:
    table = pads.dataset(os.path.join(out, "masks"), format="parquet", partitioning="hive").to_table()
    return sorted((str(r["video_id"]), r["frame_index"], r["object_id"], r["rle_counts"], r["source"])
                  for r in table.to_pylist())


def test_bulk_job_through_serve_equals_own_actors(server, client, model_config, tmp_path):
    from hqseg_ray.config import JobConfig
    from hqseg_ray.pipeline import run_job
    from hqseg_ray.synth import write_dataset

    manifest = write_dataset(tmp_path / "data", videos=2, frames=12, seed=21, size=(64, 96))

    def config(backend: str, out: str) -> JobConfig:
        return JobConfig.model_validate({
            "model": model_config, "input": {"manifest": str(manifest)},
            "chunking": {"chunk_frames": 8, "overlap": 2},
            "compute": {"gpus_per_actor": 0, "cpus_per_actor": 0.25, "decode_cpus": 0.25, "torch_threads": 1},
            "segment": {"backend": backend, "serve_app": "hqseg"},
            "output": {"path": str(tmp_path / out)},
        })

    before = client.get("/v1/stats").json()["engine"]["track_chunks"]
    summary = run_job(config("serve", "via-serve"), progress=False)
    assert summary.ok == 2 and summary.failed == 0
    assert client.get("/v1/stats").json()["engine"]["track_chunks"] - before >= 4  # 2 videos x 2 chunks
    assert run_job(config("actors", "own-actors"), progress=False).ok == 2
    via_serve = read_masks(str(tmp_path / "via-serve"))
    assert via_serve and via_serve == read_masks(str(tmp_path / "own-actors"))


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
