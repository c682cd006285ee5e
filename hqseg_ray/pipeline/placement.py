"""Where the job's output may live on a Ray cluster, and where its writer runs.

* A local ``output.path`` (plain path or ``file://``) is the disk of whichever node writes. On a
  multi-node cluster the job refuses it unless ``output.shared: true`` declares a filesystem
  mounted at the same path on every node (NFS, EFS, Filestore, a PVC with ReadWriteMany).
* The stitch/write actor is pinned to the driver's node (``NodeAffinitySchedulingStrategy``,
  hard), so the masks files, the status table and the exports are written from the same node,
  never from a worker the autoscaler may delete with its disk.
"""

from __future__ import annotations

from typing import Any

from hqseg_ray.config import JobConfig
from hqseg_ray.storage import Store


def cluster_nodes_summary(config: JobConfig) -> tuple[bool, str]:
    """``(multi_node, why)`` for the Ray cluster this process is connected to.

    Multi-node: more than one alive node, or the segment actors need GPUs that no alive node has
    (an autoscaling cluster that starts with a CPU-only head will add GPU nodes).
    """
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) > 1:
        return True, f"{len(nodes)} alive nodes"
    gpus = sum(float((n.get("Resources") or {}).get("GPU", 0)) for n in nodes)
    if config.segment.backend == "actors" and config.compute.gpus_per_actor > 0 and gpus == 0:
        return True, ("the segment actors need GPUs and no node has one yet, so the autoscaler must add "
                      "GPU nodes")
    return False, "one node"


def local_output_problem(config: JobConfig, store: Store, multi_node: bool, why: str) -> str:
    """The message refusing a local output on a multi-node cluster; '' when the output is fine."""
    if not store.local or config.output.shared or not multi_node:
        return ""
    return (f"output.path {config.output.path!r} is a local path, but the Ray cluster has several nodes "
            f"({why}): each node would see its own disk, and the autoscaler deletes a node's disk with the "
            "node. Write to an object store (output.path=s3://bucket/prefix or gs://...), or mount a shared "
            "filesystem at the same path on every node and set output.shared: true")


def check_output_placement(config: JobConfig, store: Store) -> None:
    """Raise ValueError when a local output is used on a multi-node cluster without ``output.shared``."""
    if not store.local or config.output.shared:
        return
    problem = local_output_problem(config, store, *cluster_nodes_summary(config))
    if problem:
        raise ValueError(problem)


def driver_node_strategy() -> Any:
    """A hard node-affinity scheduling strategy for the driver's node (the writer actor's)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
