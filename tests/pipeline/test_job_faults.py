"""The bulk job under faults and on several (fake-GPU) nodes.

Every test starts its own Ray (``address="local"`` or ``ray.cluster_utils.Cluster``) and ends only
the processes it started.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.pipeline.conftest import job_config
from tests.pipeline.test_job_ray import GOOD, read_masks, statuses, strip

pytestmark = [pytest.mark.ray, pytest.mark.e2e]


@pytest.fixture(scope="module")
def good_manifest(job_inputs, tmp_path_factory):
    _, rows = job_inputs
    path = tmp_path_factory.mktemp("good") / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["video_id"] in GOOD))
    return str(path)


@pytest.fixture(scope="module")
def reference(good_manifest, small_model_ckpt, tmp_path_factory):
    """The uninterrupted run's masks (one-machine segment_video gives the same; see test_job_ray)."""
    import ray

    from hqseg_ray.pipeline import run_job

    out = tmp_path_factory.mktemp("ref")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_job(job_config(good_manifest, out, small_model_ckpt), progress=False)
    finally:
        ray.shutdown()
    return strip(read_masks(out))


def _no_duplicates(rows):
    keys = [(r["video_id"], r["frame_index"], r["object_id"]) for r in rows]
    assert len(keys) == len(set(keys))


def test_fake_gpus_two_actors_fall_back_to_cpu(good_manifest, small_model_ckpt, reference, tmp_path):
    import ray

    from hqseg_ray.pipeline import run_job

    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = job_config(good_manifest, tmp_path, small_model_ckpt, gpus_per_actor=1, segment_actors_min=2,
                            segment_actors_max=2)
        summary = run_job(config, progress=False)
    finally:
        ray.shutdown()
    assert summary.ok == 4
    workers = {w for s in statuses(tmp_path).values() for w in s["workers"].split(",")}
    assert all(w.split(":")[2] == "cpu" for w in workers)           # no CUDA: each fell back to the CPU
    gpu_ids = {w.split(":")[3] for w in workers}
    assert gpu_ids == {"gpu0", "gpu1"}                             # each actor was given its own GPU
    assert strip(read_masks(tmp_path)) == reference


def _segment_actor_pids():
    """Pids of this cluster's live segment actors, from the GCS actor table (no dashboard needed)."""
    from ray._private.state import state

    return [a["Pid"] for a in state.actor_table(None).values()
            if "SegmentStage" in (a.get("ActorClassName") or "") and a.get("State") == "ALIVE" and a.get("Pid")]


def test_killed_segment_actor_job_completes_identically(good_manifest, small_model_ckpt, reference, tmp_path):
    import ray

    from hqseg_ray.pipeline import run_job

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    killed = []

    def killer():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            pids = _segment_actor_pids()
            written = list(Path(tmp_path, "masks").glob("video_id=*/part-0.parquet"))
            if pids and written:  # mid-job: one video written, others in flight
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    try:
        config = job_config(good_manifest, tmp_path, small_model_ckpt)
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        summary = run_job(config, progress=False)
        thread.join(timeout=5)
    finally:
        ray.shutdown()
    assert killed, "the segment actor was never seen alive mid-job"
    assert summary.ok == 4 and summary.failed == 0
    rows = read_masks(tmp_path)
    _no_duplicates(rows)
    assert strip(rows) == reference


def _writer_actors():
    """``(pid, node_id)`` of this cluster's live stitch/write actors (GCS actor table)."""
    from ray._private.state import state

    return [(a["Pid"], (a.get("Address") or {}).get("NodeID")) for a in state.actor_table(None).values()
            if "VideoWriter" in (a.get("ActorClassName") or "") and a.get("State") == "ALIVE" and a.get("Pid")]


def test_killed_writer_actor_job_completes_identically(good_manifest, small_model_ckpt, reference, tmp_path):
    """The writer holds partly stitched videos in memory: killed mid-job, Ray restarts it and the
    job runs the videos whose chunks it lost once more; the output equals an uninterrupted run."""
    import ray

    from hqseg_ray.pipeline import run_job
    from hqseg_ray.pipeline.relay import relay_actor_name

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    killed = []
    job_id = f"killwriter{os.getpid()}"

    def unwritten_chunks():
        """Relay entries = chunks of videos segmented but not yet written (the writer forgets a
        video's entries when it writes it)."""
        try:
            return ray.get(ray.get_actor(relay_actor_name(job_id)).stats.remote(), timeout=5)["entries"]
        except Exception:  # noqa: BLE001 -- relay not started yet / already gone
            return 0

    def killer():
        deadline, since = time.monotonic() + 240, None
        while time.monotonic() < deadline and not killed:
            actors = _writer_actors()
            written = list(Path(tmp_path, "masks").glob("video_id=*/part-0.parquet"))
            # mid-job: one video written, and two chunks of another segmented but not yet written
            since = (since or time.monotonic()) if written and unwritten_chunks() >= 2 else None
            if actors and since and time.monotonic() - since > 0.3:
                os.kill(actors[0][0], signal.SIGKILL)
                killed.append(actors[0][0])
            time.sleep(0.05)

    try:
        config = job_config(good_manifest, tmp_path, small_model_ckpt)
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        summary = run_job(config, job_id=job_id, progress=False)
        thread.join(timeout=5)
    finally:
        ray.shutdown()
    assert killed, "the writer actor was never seen alive mid-job"
    # Whether the restarted writer lost a partly stitched video depends on which of its tasks had
    # completed at the kill (Ray retries the ones in flight); lost videos are run again
    # ("got no result" in the log). Either way the output must equal the uninterrupted run:
    assert summary.ok == 4 and summary.failed == 0
    rows = read_masks(tmp_path)
    _no_duplicates(rows)
    assert strip(rows) == reference
    assert {v for v, s in statuses(tmp_path).items() if s["status"] == "ok"} == GOOD


def test_killed_driver_rerun_gives_same_output(good_manifest, small_model_ckpt, reference, tmp_path):
    out = tmp_path / "out"
    ray_tmp = Path("/tmp") / f"hqdrv{os.getpid()}"
    cfg_path = tmp_path / "job.yaml"
    cfg = job_config(good_manifest, out, small_model_ckpt)
    cfg_path.write_text(yaml.safe_dump(json.loads(cfg.model_dump_json())))
    env = dict(os.environ, RAY_TMPDIR=str(ray_tmp), PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cmd = [sys.executable, "-m", "hqseg_ray.cli", "label", str(cfg_path), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if list(out.glob("masks/video_id=*/part-0.parquet")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything in its session
        proc.wait(timeout=30)
    finally:
        _kill_ray_processes_under(ray_tmp)
    done_before = len(list(out.glob("masks/video_id=*/part-0.parquet")))
    assert 1 <= done_before < 4
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    _kill_ray_processes_under(ray_tmp)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{4 - done_before} ok, 0 failed, {done_before} skipped" in rerun.stdout
    rows = read_masks(out)
    _no_duplicates(rows)
    assert strip(rows) == reference
    assert {v for v, s in statuses(out).items() if s["status"] == "ok"} == GOOD


def _kill_ray_processes_under(ray_tmp: Path) -> None:
    """End the Ray processes that this test's driver started (their command lines name its temp dir)."""
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            cmdline = (pid_dir / "cmdline").read_bytes().decode(errors="ignore")
        except OSError:
            continue
        if str(ray_tmp) in cmdline:
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_two_nodes_share_the_work(good_manifest, small_model_ckpt, reference, tmp_path, capsys):
    """Segment actors on both GPU nodes; the writer on the driver's node; a local output refused
    (by the job and by ``hqseg validate --address``) unless declared shared (here it is: every
    node of this test runs on this machine)."""
    import ray
    from ray.cluster_utils import Cluster

    from hqseg_ray.cli import main
    from hqseg_ray.pipeline import run_job

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    try:
        nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        cfg_path = tmp_path / "job.yaml"
        config = job_config(good_manifest, tmp_path / "out", small_model_ckpt, gpus_per_actor=1,
                            segment_actors_min=2, segment_actors_max=2)
        cfg_path.write_text(yaml.safe_dump(json.loads(config.model_dump_json())))
        assert main(["validate", str(cfg_path), "--no-probe", "--address", cluster.address]) == 1
        assert "output.shared" in capsys.readouterr().out
        ray.init(address=cluster.address, log_to_driver=False)
        with pytest.raises(ValueError, match="local path, but the Ray cluster has several nodes"):
            run_job(config, progress=False)
        seen = []

        def watch():
            deadline = time.monotonic() + 120
            while not seen and time.monotonic() < deadline:
                seen.extend(_writer_actors())
                time.sleep(0.1)

        threading.Thread(target=watch, daemon=True).start()
        config.output.shared = True
        summary = run_job(config, progress=False)
        driver_node = ray.get_runtime_context().get_node_id()
        node_ids = {n.node_id[:12] for n in nodes}
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert summary.ok == 4
    used = {w.split(":")[0] for s in statuses(tmp_path / "out").values() for w in s["workers"].split(",")}
    assert used == node_ids          # segment actors ran on both GPU nodes, never on the head
    assert seen and {node for _, node in seen} == {driver_node}   # the writer ran on the driver's node
    assert strip(read_masks(tmp_path / "out")) == reference
