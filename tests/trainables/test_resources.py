"""Preflight: refuse only what no node could ever run, warn when work will queue, read an
autoscaler's node types from the cluster."""

from __future__ import annotations

import pytest

from raydistill.platform.errors import ResourceError
from raydistill.trainables.resources import Capacity, Demand, assess

TWO_NODES = Capacity(total={"CPU": 8.0}, available={"CPU": 8.0},
                     node_shapes=[{"CPU": 4.0}, {"CPU": 4.0}])
BUSY = Capacity(total={"CPU": 8.0}, available={"CPU": 1.0}, node_shapes=[{"CPU": 8.0}])
# An autoscaling cluster with min_workers 0: a 2-CPU head now, up to 4 workers of 16 CPUs and 1 GPU.
AUTOSCALING = Capacity(total={"CPU": 2.0}, available={"CPU": 2.0},
                       node_shapes=[{"CPU": 2.0}, {"CPU": 16.0, "GPU": 1.0}],
                       autoscale_max={"CPU": 66.0, "GPU": 4.0})

CASES = [
    # (capacity, demands, all_at_once, refused?, warned?)
    (TWO_NODES, [Demand("CPU", 1, 6, "w")], True, False, False),
    (TWO_NODES, [Demand("CPU", 1, 9, "w")], True, True, False),  # more than the cluster
    (TWO_NODES, [Demand("CPU", 5, 1, "w")], True, True, False),  # one unit larger than any node
    (TWO_NODES, [Demand("CPU", 3, 5, "t")], False, False, False),  # trials queue: one must fit
    (TWO_NODES, [Demand("GPU", 1, 1, "g")], True, True, False),  # no GPU anywhere
    (TWO_NODES, [Demand("GPU", 0, 4, "g"), Demand("CPU", 1, 0, "w")], True, False, False),  # zero asks
    (BUSY, [Demand("CPU", 1, 4, "w")], True, False, True),  # fits, but waits for others' work
    (BUSY, [Demand("CPU", 1, 1, "w")], True, False, False),
    (AUTOSCALING, [Demand("CPU", 1, 8, "w"), Demand("GPU", 1, 2, "g")], True, False, True),
    (AUTOSCALING, [Demand("CPU", 17, 1, "w")], True, True, False),  # no node type has 17 CPUs
    (AUTOSCALING, [Demand("GPU", 1, 5, "g")], True, True, False),  # beyond the autoscaler's max
]


@pytest.mark.parametrize("capacity,demands,all_at_once,refused,warned", CASES)
def test_preflight_refuses_only_what_can_never_run(capacity, demands, all_at_once, refused, warned):
    if refused:
        with pytest.raises(ResourceError, match="Lower those settings or add nodes"):
            assess("stage", demands, capacity, all_at_once)
    else:
        assert bool(assess("stage", demands, capacity, all_at_once)) == warned


def test_refusal_names_the_settings_and_the_figures():
    with pytest.raises(ResourceError) as err:
        assess("the teacher stage", [Demand("CPU", 1, 8, "teacher.num_workers x teacher.cpus_per_worker"),
                                     Demand("CPU", 0.5, 2, "al.scorers x al.cpus_per_scorer")], BUSY, True)
    assert str(err.value).startswith("the teacher stage needs 9 CPU at once (teacher.num_workers")
    assert "al.scorers x al.cpus_per_scorer) but the cluster has 8." in str(err.value)
    with pytest.raises(ResourceError, match="needs 17 CPU on one node .* largest node has 16"):
        assess("the sweep", [Demand("CPU", 17, 1, "sweep.cpus_per_trial")], AUTOSCALING, False)


@pytest.mark.ray
def test_capacity_reads_nodes_and_the_autoscaler_config(ray_cluster):
    """The autoscaler publishes its node types in the GCS; a cluster without one has no ceiling
    beyond its nodes."""
    import ray
    from ray._private.state import state
    from ray.core.generated import autoscaler_pb2
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_put

    from raydistill.trainables.resources import cluster_capacity

    plain = cluster_capacity()
    assert plain.autoscale_max is None
    assert plain.largest_node("CPU") == ray.cluster_resources()["CPU"] == 2
    config = autoscaler_pb2.ClusterConfig(node_group_configs=[
        autoscaler_pb2.NodeGroupConfig(name="head", resources={"CPU": 2}, min_count=1, max_count=1),
        autoscaler_pb2.NodeGroupConfig(name="gpu-worker", resources={"CPU": 8, "GPU": 1}, min_count=0, max_count=3),
    ])
    namespace = ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE
    key = ray._raylet.GCS_AUTOSCALER_CLUSTER_CONFIG_KEY
    _internal_kv_put(key, config.SerializeToString(), overwrite=True, namespace=namespace)
    try:
        assert state.get_cluster_config() is not None
        scaled = cluster_capacity()
        assert scaled.ceiling("GPU") == 3 and scaled.ceiling("CPU") == 26
        assert scaled.largest_node("CPU") == 8
        assert assess("s", [Demand("GPU", 1, 3, "g")], scaled, True)  # waits for nodes, not refused
    finally:
        _internal_kv_del(key, namespace=namespace)
