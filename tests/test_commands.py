"""`hqseg validate` on configs and manifests; every config file in configs/ validates."""

import json
from pathlib import Path

import pytest

from hqseg_ray.cli import main
from tests.s3 import s3_server  # noqa: F401 -- fixture

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml"))


def _is_job_or_model_config(path: Path) -> bool:
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    return "applications" not in data  # configs/serve.yaml is a Ray Serve config file, checked in tests/deploy


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_starts_with_its_command_and_validates(path, capsys):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and ("hqseg " in first or "serve " in first), f"{path.name}: first line must be the command"
    if _is_job_or_model_config(path):
        assert main(["validate", str(path), "--no-probe", "--set", "input.manifest=null"]) == 0, capsys.readouterr().out


def test_validate_reports_every_problem(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {type: vit_q, decode_batch: 0}\nchunking: {chunk_frames: 4, overlap: 9}\nbogus: 1\n")
    assert main(["validate", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "4 problem(s)" in out and "model.type" in out and "model.decode_batch" in out
    assert "bogus: unknown section" in out and "overlap" in out


def test_validate_checks_manifest_rows_and_videos(tmp_path, capsys):
    from hqseg_ray.synth import write_dataset

    manifest = write_dataset(tmp_path / "d", videos=1, frames=6, seed=1, size=(48, 64))
    row = json.loads(Path(manifest).read_text().splitlines()[0])
    bad = [row,
           {"video": row["video"], "video_id": "late", "prompts": [{"object_id": 1, "frame": 50, "box": [1, 1, 5, 5]}]},
           {"video": str(tmp_path / "missing.mp4"), "video_id": "missing", "prompts": []}]
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in bad))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{type: toy}}\ninput: {{manifest: {m}}}\n")
    assert main(["validate", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "2 problem(s)" in out and "frame 50" in out and "missing.mp4" in out
    good = tmp_path / "good.yaml"
    good.write_text(f"model: {{type: toy}}\ninput: {{manifest: {manifest}}}\n")
    assert main(["validate", str(good)]) == 0
    assert "1 video(s) checked" in capsys.readouterr().out


def test_builtin_demo_config_equals_configs_file():
    """`hqseg demo` from a wheel (no configs/ folder) runs the same job as configs/label-demo.yaml."""
    import yaml

    from hqseg_ray.pipeline.cli import demo_config_dict

    assert demo_config_dict([]) == yaml.safe_load((ROOT / "configs" / "label-demo.yaml").read_text())


def test_validate_probes_the_output_location(s3_server, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {type: toy}\noutput: {path: s3://no-such-bucket/out}\n")
    assert main(["validate", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "output.path" in out and "no-such-bucket" in out and "not writable" in out
    prefix = s3_server.prefix()
    assert main(["validate", str(cfg), "--set", f"output.path={s3_server.url(prefix)}"]) == 0
    assert "OK" in capsys.readouterr().out
    assert [k for k in s3_server.keys(prefix) if not k.endswith("/")] == []   # the probe object was deleted
    new = tmp_path / "not" / "yet"
    assert main(["validate", str(cfg), "--set", f"output.path={new}"]) == 0
    assert not (tmp_path / "not").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]
    (tmp_path / "file").write_text("x")
    assert main(["validate", str(cfg), "--set", f"output.path={tmp_path / 'file' / 'out'}"]) == 1
    assert "is a file" in capsys.readouterr().out
