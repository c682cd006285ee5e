"""`hqseg bench` end to end at toy size: engine, naive loop and a 1-video job on a local Ray.

Checks the output contract (bench.json keys and types, bench.md with command and machine), not
speed: numbers measured in CI on a shared machine are not targets."""

import json
import numbers

import pytest

from hqseg_ray.bench.report import CONTRACT_KEYS


def numeric_leaves(value):
    """All leaves of a contract value: a number, or (nested) objects holding numbers."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in numeric_leaves(v)]
    return [value]


def test_bench_command_is_registered():
    from hqseg_ray.cli import build_parser

    args = build_parser("bench").parse_args(["bench", "--quick", "--out", "x", "--scenarios", "engine,job"])
    assert args.quick and args.out == "x" and args.scenarios == "engine,job"


def test_unknown_scenario_is_an_error(tmp_path):
    from hqseg_ray.bench import Settings, run_bench

    with pytest.raises(ValueError, match="unknown scenario.*'nope'.*known: engine"):
        run_bench(tmp_path, Settings.quick(), ["engine", "nope"])


@pytest.mark.ray
@pytest.mark.slow
def test_bench_quick_writes_the_contract(tmp_path):
    from hqseg_ray.bench import Settings, run_bench

    settings = Settings.quick()
    settings.job_frames, settings.chunk_frames, settings.overlap = 16, 8, 2  # 2 chunks: the relay runs
    settings.engine_frames, settings.naive_frames = 4, 2
    out = tmp_path / "bench"
    run_bench(out, settings, ["engine", "naive", "job"], command="hqseg bench --quick (test)",
              data_dir=tmp_path / "data")

    res = json.loads((out / "bench.json").read_text())
    for key in CONTRACT_KEYS:
        assert key in res
    # measured in this run: numbers (or objects holding numbers)
    eff = res["efficiency"]
    assert isinstance(eff["value"], numbers.Real) and eff["value"] > 0
    assert eff["engine_only_frames_per_s"] > 0 and eff["job_frames_per_s"] > 0
    assert 0 < eff["actor_utilisation"] <= 1.0 and eff["cpu"] > 0
    assert all(leaf is None or isinstance(leaf, numbers.Real) for leaf in numeric_leaves(eff))
    speedups = res["speedup_vs_naive"]
    assert set(speedups["engine"]) == {"1", "4", "16"}
    assert all(isinstance(v, numbers.Real) and v > 0 for v in numeric_leaves(speedups["engine"]))
    assert speedups["job"]["objects"] >= 1 and speedups["job"]["value"] > 0
    # not selected: null, with the reason recorded
    assert res["rss_ratio"] is None and res["actor_scaling"] is None
    assert "not selected" in res["not_measured"]["length"] and "not selected" in res["not_measured"]["actors"]
    job = res["scenarios"]["job"]["job"]
    assert job["frames"] == 16 and job["videos"] == 1 and job["peak_rss_mib"] >= job["baseline_rss_mib"] > 0
    assert res["machine"]["cores"] >= 1 and res["machine"]["torch"] and res["machine"]["ray"]

    md = (out / "bench.md").read_text()
    assert "hqseg bench --quick (test)" in md and res["machine"]["cpu"] in md and "| efficiency" in md
    assert (out / "naive.png").stat().st_size > 1000
