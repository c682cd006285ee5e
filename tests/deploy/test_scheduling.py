"""Scheduling on a multi-node local cluster (ray.cluster_utils.Cluster; no AutoscalingCluster, which
runs `ray stop --force` and kills every Ray process on the machine).

A CPU-only head plus nodes with fake GPU resources, as the launcher configs and KubeRay manifests
build them: GPU actors land only on GPU nodes, and a Ray Data actor pool with min_size < max_size
grows onto a GPU node that joins while the job runs. The mapped class is a stand-in for the
pipeline's segment stage (it only reports where it ran).
"""

from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180),
              pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": 0, "include_dashboard": False, "resources": {"head": 1},
    })
    try:
        cluster.add_node(num_cpus=2, num_gpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _gpu_node_ids() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU", 0) > 0}


def _head_node_id() -> str:
    (head,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and "head" in n["Resources"]]
    return head


class FakeSegmentStage:
    """Stand-in for the segment stage: a GPU actor that tags each row with its node id."""

    def __init__(self):
        self.node_id = ray.get_runtime_context().get_node_id()

    def __call__(self, batch):
        time.sleep(0.3)  # long enough that the job is still running when a node joins
        batch["node_id"] = [self.node_id] * len(batch["id"])
        return batch


@pytest.fixture
def pool_upscaling_at_full_util():
    """The segment stage queues one chunk per actor (compute.max_tasks_in_flight_per_actor: 1), so
    an actor pool's utilisation never exceeds 1.0, while Ray Data (2.60) grows a pool only at
    utilisation >= 1.75 by default: such a pool would never grow. Upscaling at 1.0 fixes that; the
    pipeline must set the same (DataContext.autoscaling_config), see docs/deploy.md."""
    ctx = ray.data.DataContext.get_current()
    before = ctx.autoscaling_config.actor_pool_util_upscaling_threshold
    ctx.autoscaling_config.actor_pool_util_upscaling_threshold = 1.0
    yield
    ctx.autoscaling_config.actor_pool_util_upscaling_threshold = before


@pytest.mark.slow
def test_actor_pool_grows_onto_a_gpu_node_added_during_the_job(cluster, pool_upscaling_at_full_util):
    """min_size=1 < max_size=2 with one GPU: the pool stays at one actor until a GPU node joins,
    then grows onto it. Ray Data notices new nodes through its autoscaling coordinator, which
    refreshes the cluster's resources every 20 s, so the job runs until the new node has done work
    (or a deadline) and then stops consuming."""
    assert len(_gpu_node_ids()) == 1
    first_gpu_node = next(iter(_gpu_node_ids()))
    ds = ray.data.range(1000, override_num_blocks=200).map_batches(
        FakeSegmentStage, batch_size=5, num_gpus=1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2, max_tasks_in_flight_per_actor=1),
    )
    seen_before, seen_after, joined_at = [], [], None
    for batch in ds.iter_batches(batch_size=5, prefetch_batches=0):
        if joined_at is None:
            seen_before.extend(batch["node_id"])
            if len(seen_before) >= 15:
                cluster.add_node(num_cpus=2, num_gpus=1)  # a GPU worker joins mid-job
                joined_at = time.monotonic()
        else:
            seen_after.extend(batch["node_id"])
            if set(seen_after) - {first_gpu_node} or time.monotonic() - joined_at > 60:
                break  # stops the job: what follows would only repeat the same two nodes

    head = _head_node_id()
    assert set(seen_before) == {first_gpu_node}, "before the join, only the one GPU node may run the stage"
    assert head not in set(seen_before) | set(seen_after)
    new_nodes = set(seen_after) - {first_gpu_node}
    assert new_nodes, "the actor pool did not grow onto the GPU node that joined"
    assert new_nodes <= _gpu_node_ids()


def test_gpu_actors_land_only_on_gpu_nodes(cluster):
    while len(_gpu_node_ids()) < 2:
        cluster.add_node(num_cpus=2, num_gpus=1)
    gpu_nodes, head = _gpu_node_ids(), _head_node_id()

    @ray.remote(num_gpus=1, num_cpus=0)
    class GpuActor:
        def where(self):
            return ray.get_runtime_context().get_node_id(), ray.get_gpu_ids()

    actors = [GpuActor.remote() for _ in range(len(gpu_nodes))]
    placed = ray.get([a.where.remote() for a in actors], timeout=60)
    assert {node for node, _ in placed} == gpu_nodes  # one per GPU node, none on the head
    assert all(len(gpu_ids) == 1 for _, gpu_ids in placed)

    # One more GPU actor than there are GPUs: it waits (the head has no GPU) instead of landing there.
    extra = GpuActor.remote()
    ready, _ = ray.wait([extra.where.remote()], timeout=3)
    assert ready == []
    assert head not in gpu_nodes
    for actor in [*actors, extra]:
        ray.kill(actor)
