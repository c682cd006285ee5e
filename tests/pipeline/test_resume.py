"""Resume keys (no Ray): what changes a video's key, corrupt files, temporary-file sweep."""

import json
import os

import pytest

from hqseg_ray.config import JobConfig
from hqseg_ray.export.parquet import write_video_parquet
from hqseg_ray.pipeline.job import sweep_temp_files
from hqseg_ray.pipeline.resume import add_input_keys, resume_filter, video_fingerprint
from hqseg_ray.storage import open_store
from hqseg_ray.track.types import FrameResult


def _rows(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.mp4").write_bytes(b"video " + name.encode())
    prompts = json.dumps([{"object_id": 1, "frame": 0, "box": [1, 2, 3, 4]}])
    return [{"video": str(tmp_path / f"{n}.mp4"), "video_id": n, "prompts_json": prompts, "auto": False}
            for n in ("a", "b")]


def _keys(config, rows):
    rows = [dict(r) for r in rows]
    add_input_keys(config, rows)
    return [r["input_key"] for r in rows]


def test_input_key_changes_with_prompts_file_auto_and_config(tmp_path):
    config = JobConfig.model_validate({"output": {"path": str(tmp_path / "out")}})
    rows = _rows(tmp_path)
    base = _keys(config, rows)
    assert base == _keys(config, rows) and base[0] != base[1]
    edited = [dict(rows[0], prompts_json=json.dumps([{"object_id": 1, "frame": 0, "box": [1, 2, 3, 5]}])), rows[1]]
    assert [a == b for a, b in zip(base, _keys(config, edited))] == [False, True]
    assert [a == b for a, b in zip(base, _keys(config, [dict(rows[0], auto=True), rows[1]]))] == [False, True]
    st = os.stat(rows[1]["video"])
    os.utime(rows[1]["video"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert [a == b for a, b in zip(base, _keys(config, rows))] == [True, False]
    other = JobConfig.model_validate({"output": {"path": str(tmp_path / "o")}, "chunking": {"chunk_frames": 17}})
    assert all(a != b for a, b in zip(_keys(config, rows), _keys(other, rows)))
    moved = JobConfig.model_validate({"output": {"path": str(tmp_path / "elsewhere")}, "compute": {"decode_cpus": 2}})
    assert _keys(config, rows) == _keys(moved, rows)     # output and compute settings do not redo videos


def test_fingerprint_of_frame_folder_and_missing(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "00000.jpg").write_bytes(b"x" * 10)
    (tmp_path / "f" / "notes.txt").write_bytes(b"ignored")
    fp = video_fingerprint(str(tmp_path / "f"))
    assert fp["files"] == 1 and fp["size"] == 10
    assert "error" in video_fingerprint(str(tmp_path / "missing.mp4"))


def test_resume_filter_skips_matching_and_redoes_corrupt(tmp_path, caplog):
    config = JobConfig.model_validate({"output": {"path": str(tmp_path / "out")}})
    rows = _rows(tmp_path)
    add_input_keys(config, rows)
    frames = [FrameResult(0, [1], [{"size": [4, 4], "counts": "04L0"}], [0.9], ["prompt"], 0, [0])]
    for r in rows:
        write_video_parquet(frames, config.output.path, r["video_id"], meta={"input_key": r["input_key"]})
    todo, skipped = resume_filter(config, rows, {})
    assert todo == [] and [s["video_id"] for s in skipped] == ["a", "b"]
    (tmp_path / "out" / "masks" / "video_id=b" / "part-0.parquet").write_bytes(b"garbage")
    todo, skipped = resume_filter(config, rows, {})
    assert [r["video_id"] for r in todo] == ["b"] and [s["video_id"] for s in skipped] == ["a"]
    assert "unreadable" in caplog.text and "video_id=b" in caplog.text
    over = config.model_copy(update={"output": config.output.model_copy(update={"overwrite": True})})
    assert len(resume_filter(over, rows, {})[0]) == 2


def test_sweep_removes_only_temporary_files(tmp_path):
    store = open_store(str(tmp_path))
    store.write_bytes("masks/video_id=a/part-0.parquet", b"real")
    store.write_bytes("masks/video_id=a/.part-0.parquet.x1y2.tmp", b"half")
    store.write_bytes("masks/video_id=b/.part-0.parquet.tmp-1234", b"half (older writer)")
    assert sweep_temp_files(store) == 2
    assert sorted(p.name for p in (tmp_path / "masks").rglob("*") if p.is_file()) == ["part-0.parquet"]


@pytest.mark.parametrize("path", ["memory://x/out"])
def test_sweep_is_a_no_op_on_object_stores(path):
    assert sweep_temp_files(open_store(path)) == 0
