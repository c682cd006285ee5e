"""Fixtures for the bulk-job tests: synthetic videos, a corrupt one, bad prompts, a small model."""

import json
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_model_ckpt(tmp_path_factory):
    """A small random-weight SAM-HQ saved as a 'toy'-type checkpoint: fast, deterministic, and
    independent of the trained toy model's quality (these tests check the job, not accuracy)."""
    from hqseg_ray.model.registry import save_spec_checkpoint
    from tests.model.helpers import SMALL_SPEC, small_sam

    path = tmp_path_factory.mktemp("model") / "small.pt"
    save_spec_checkpoint(small_sam(5), SMALL_SPEC, path)
    return str(path)


@pytest.fixture(scope="session")
def job_inputs(tmp_path_factory):
    """Six manifest rows: four good videos (one long enough for >= 4 chunks of 8 frames), one
    corrupt file, one with invalid prompts. Returns (manifest path, rows)."""
    from hqseg_ray.synth import write_dataset

    root = tmp_path_factory.mktemp("job")
    rows = []
    m1 = write_dataset(root / "short", videos=3, frames=12, seed=11, size=(64, 96))
    rows += [json.loads(line) for line in Path(m1).read_text().splitlines()]
    m2 = write_dataset(root / "long", videos=1, frames=30, seed=12, size=(64, 96))
    rows += [json.loads(line) for line in Path(m2).read_text().splitlines()]
    rows[-1]["prompts"][0]["label"] = "blob"  # a category, carried to the masks' label column
    rows[-1]["default_label"] = "thing"
    bad = root / "corrupt.mp4"
    bad.write_bytes(os.urandom(2000))
    rows.append({"video": str(bad), "video_id": "corrupt", "prompts": [{"object_id": 1, "frame": 0, "box": [1, 1, 9, 9]}]})
    rows.append({"video": rows[0]["video"], "video_id": "bad_prompts",
                 "prompts": [{"object_id": 1, "frame": 500, "box": [40, 1, 9, 9]}]})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(manifest), rows


def job_config(manifest, out, ckpt, **compute):
    from hqseg_ray.config import JobConfig

    return JobConfig.model_validate({
        "model": {"type": "toy", "checkpoint": ckpt, "device": "cpu"},
        "input": {"manifest": manifest},
        "chunking": {"chunk_frames": 8, "overlap": 2},
        "compute": {"gpus_per_actor": 0, "cpus_per_actor": 0.5, "decode_cpus": 0.5, "torch_threads": 1, **compute},
        "output": {"path": str(out)},
    })
