"""The bulk job into an object store (a real S3 server, moto, on 127.0.0.1) and resume that
cannot go stale (input keys, corrupt files, the output lock)."""

import json
import logging
import os
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from tests.pipeline.conftest import job_config
from tests.pipeline.test_job_ray import read_masks, statuses, strip
from tests.s3 import s3_server  # noqa: F401 -- fixture

pytestmark = [pytest.mark.ray, pytest.mark.e2e]

SHORT = ["synth_s11_000", "synth_s11_001", "synth_s11_002"]


@pytest.fixture(scope="module")
def ray_s3(s3_server):
    """Ray started after the S3 endpoint and credentials are in the environment (as a user would
    export them), so every worker reaches the server."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield s3_server
    ray.shutdown()


def _manifest(job_inputs, path, ids, edit=None):
    _, rows = job_inputs
    rows = [dict(r) for r in rows if r["video_id"] in ids]
    for r in rows:
        if edit and r["video_id"] in edit:
            r["prompts"] = edit[r["video_id"]](r["prompts"])
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _s3_masks(url):
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(url + "/masks")
    rows = pads.dataset(path, filesystem=fs, format="parquet", partitioning="hive").to_table().to_pylist()
    for r in rows:
        r["video_id"] = str(r["video_id"])
    return sorted(rows, key=lambda r: (r["video_id"], r["frame_index"], r["object_id"]))


def test_job_to_s3_resume_and_exports(ray_s3, job_inputs, small_model_ckpt, tmp_path, monkeypatch):
    from hqseg_ray.export import export_all
    from hqseg_ray.pipeline import run_job
    from hqseg_ray.storage import open_store

    s3 = ray_s3
    monkeypatch.chdir(tmp_path)  # a wrong local write would show up here as an "s3:" folder
    manifest = _manifest(job_inputs, tmp_path / "m.jsonl", SHORT + ["corrupt"])
    local = run_job(job_config(manifest, tmp_path / "local", small_model_ckpt), progress=False)
    prefix = s3.prefix()
    url = s3.url(prefix)
    summary = run_job(job_config(manifest, url, small_model_ckpt), progress=False)
    assert (summary.ok, summary.failed) == (local.ok, local.failed) == (3, 1)
    assert not any(p.name.startswith("s3") for p in tmp_path.iterdir())
    keys = s3.keys(prefix)
    assert not [k for k in keys if ".tmp" in k or k.endswith(".lock")], keys   # no temporary objects, lock released
    assert s3.uploads(prefix) == []
    st = {r["video_id"]: r for r in open_store(url).read_table("videos.parquet").to_pylist()}
    assert {v for v, s in st.items() if s["status"] == "ok"} == set(SHORT)
    assert st["synth_s11_000"]["path"] == f"{url}/masks/video_id=synth_s11_000/part-0.parquet"
    assert strip(_s3_masks(url)) == strip(read_masks(tmp_path / "local"))

    again = run_job(job_config(manifest, url, small_model_ckpt), progress=False)   # resume from the bucket
    assert (again.ok, again.skipped, again.failed) == (0, 3, 1)
    assert strip(_s3_masks(url)) == strip(read_masks(tmp_path / "local"))

    from hqseg_ray.export.formats import FORMATS

    paths = export_all(url, list(FORMATS))   # every format, the labeling tools' included
    assert paths["coco"] == f"{url}/exports/coco"
    local_paths = export_all(str(tmp_path / "local"), ["coco", "cvat", "labelstudio", "coco-merged"])
    keys = set(s3.keys(prefix))
    for rel in ("exports/coco-merged/instances.json", "exports/review/tasks.json", "exports/cvat/labels.json",
                "exports/labelstudio/label_config.xml"):
        assert f"{prefix}/{rel}" in keys, rel
    for vid in SHORT:
        assert f"{prefix}/review/{vid}.json" in keys   # the job's review queue, beside the masks
        for rel in (f"exports/cvat/{vid}.xml", f"exports/cvat/{vid}.masks.xml", f"exports/labelstudio/{vid}.json"):
            assert open_store(url).read_bytes(rel) == Path(tmp_path, "local", rel).read_bytes(), rel
    for vid in SHORT:
        assert f"{prefix}/exports/coco/{vid}.json" in keys
        assert f"{prefix}/exports/davis/{vid}/00000.png" in keys
        assert f"{prefix}/overlay/{vid}.mp4" in keys and f"{prefix}/overlay/{vid}.png" in keys
        remote = json.loads(open_store(url).read_bytes(f"exports/coco/{vid}.json"))
        assert remote == json.loads(Path(local_paths["coco"], f"{vid}.json").read_text())
    assert f"{prefix}/exports/ytvis/instances.json" in keys
    assert not [k for k in keys if ".tmp" in k]


def test_resume_key_prompts_corrupt_files_and_lock(ray_s3, job_inputs, small_model_ckpt, tmp_path, caplog):
    from hqseg_ray.pipeline import run_job
    from hqseg_ray.pipeline.lock import OutputLock, OutputLockedError
    from hqseg_ray.storage import open_store

    out = tmp_path / "out"
    manifest = _manifest(job_inputs, tmp_path / "m.jsonl", SHORT)
    first = run_job(job_config(manifest, out, small_model_ckpt), progress=False)
    assert first.ok == 3
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("masks/*/part-0.parquet")}

    # one video's prompts edited: only that video is redone (same config)
    shift = lambda ps: [dict(p, box=[p["box"][0] + 2, p["box"][1], p["box"][2] + 2, p["box"][3]]) for p in ps]  # noqa: E731
    edited = _manifest(job_inputs, tmp_path / "m2.jsonl", SHORT, edit={"synth_s11_001": shift})
    second = run_job(job_config(edited, out, small_model_ckpt), progress=False)
    assert (second.ok, second.skipped) == (1, 2)
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("masks/*/part-0.parquet")}
    assert [k for k in before if before[k] != after[k]] == ["video_id=synth_s11_001"]

    # a corrupt masks file and a corrupt status table: that video is redone, with a warning, no crash
    (out / "masks" / "video_id=synth_s11_002" / "part-0.parquet").write_bytes(b"not parquet")
    (out / "videos.parquet").write_bytes(b"PAR1 truncated")
    with caplog.at_level(logging.WARNING):
        third = run_job(job_config(edited, out, small_model_ckpt), progress=False)
    assert (third.ok, third.skipped, third.failed) == (1, 2, 0)
    assert "synth_s11_002" in caplog.text and "unreadable" in caplog.text and "videos.parquet" in caplog.text
    assert {v for v, s in statuses(out).items() if s["status"] == "ok"} == set(SHORT)

    # a second job into the same output at the same time refuses, naming the owner
    with OutputLock(open_store(str(out)), "other-job", ttl_s=600):
        with pytest.raises(OutputLockedError, match="other-job"):
            run_job(job_config(edited, out, small_model_ckpt), progress=False)
    assert not os.path.exists(out / "_hqseg.lock")
