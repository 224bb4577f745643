"""Preflight: compare what a stage will ask Ray for with what the cluster can give, before it starts.

Ray queues a request it cannot place and waits forever; a user sees a silent hang. So each stage
states its demands (units of one resource: Train workers, scorers, trials, replicas) and this
module answers with one of three verdicts:

- refuse (``ResourceError`` naming the settings) what no node could ever run: a unit larger
  than every node and every node type the autoscaler may add, or work that must run all at
  once and exceeds the cluster at its largest (its current nodes, or the autoscaler's maximum);
- warn that work will queue when it fits the cluster but not what is free right now (a busy
  cluster, or an autoscaling one that has to start nodes first);
- pass silently otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raydistill.platform.errors import ResourceError
from raydistill.platform.logs import log

_EPS = 1e-9


@dataclass(frozen=True)
class Demand:
    """``count`` units that each need ``per_unit`` of ``resource`` on one node."""

    resource: str
    per_unit: float
    count: int
    settings: str  # the config settings the figures come from, for the message

    @property
    def total(self) -> float:
        return self.per_unit * self.count


@dataclass(frozen=True)
class Capacity:
    """What a cluster has now and could have at most."""

    total: dict[str, float]  # the alive nodes' resources, summed
    available: dict[str, float]  # free right now
    node_shapes: list[dict[str, float]] = field(default_factory=list)  # alive nodes and autoscaler node types
    autoscale_max: dict[str, float] | None = None  # the autoscaler's ceiling, when it has one

    def ceiling(self, resource: str) -> float:
        have = float(self.total.get(resource, 0.0))
        if self.autoscale_max is not None:
            have = max(have, float(self.autoscale_max.get(resource, 0.0)))
        return have

    def largest_node(self, resource: str) -> float:
        return max((float(shape.get(resource, 0.0)) for shape in self.node_shapes), default=0.0)


def assess(stage: str, demands: list[Demand], capacity: Capacity, all_at_once: bool) -> list[str]:
    """Return the warnings for ``demands`` (empty when the work starts at once); raise
    ResourceError for work no node or cluster size could run.

    ``all_at_once``: every unit must run together (Train workers beside their scorers, Serve
    replicas); otherwise units run as they fit (Tune trials), so only one unit must fit."""
    demands = [d for d in demands if d.count > 0 and d.per_unit > 0]
    problems, warnings = [], []
    for d in demands:
        if capacity.node_shapes and d.per_unit > capacity.largest_node(d.resource) + _EPS:
            problems.append(f"{stage} needs {d.per_unit:g} {d.resource} on one node ({d.settings}) "
                            f"but the largest node has {capacity.largest_node(d.resource):g}")
    for resource in sorted({d.resource for d in demands}):
        mine = [d for d in demands if d.resource == resource]
        need = sum(d.total for d in mine) if all_at_once else max(d.per_unit for d in mine)
        settings = "; ".join(d.settings for d in mine)
        if need > capacity.ceiling(resource) + _EPS:
            scale = " even at the autoscaler's maximum" if capacity.autoscale_max is not None else ""
            problems.append(f"{stage} needs {need:g} {resource} at once ({settings}) but the cluster "
                            f"has {capacity.ceiling(resource):g}{scale}")
        elif need > float(capacity.available.get(resource, 0.0)) + _EPS:
            warnings.append(f"{stage} needs {need:g} {resource} at once but {float(capacity.available.get(resource, 0.0)):g} "
                            f"are free now: it will wait for other work to finish or for nodes to start")
    if problems:
        raise ResourceError("; ".join(problems) + ". Lower those settings or add nodes.")
    return warnings


def cluster_capacity() -> Capacity:
    """The connected cluster's capacity: alive nodes, free resources and, where an autoscaler
    has published its node types (``cluster.yaml``, KubeRay), what it may add."""
    import ray

    nodes = [dict(n.get("Resources", {})) for n in ray.nodes() if n.get("Alive")]
    max_resources, node_types = _autoscaler_limits()
    return Capacity(total=dict(ray.cluster_resources()), available=dict(ray.available_resources()),
                    node_shapes=nodes + node_types, autoscale_max=max_resources)


def _autoscaler_limits() -> tuple[dict[str, float] | None, list[dict[str, float]]]:
    """The autoscaler's maximum resources and node-type shapes from the GCS (Ray Data reads them
    the same way); (None, []) on a cluster without an autoscaler or if Ray's private API moved."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        if config is None or not config.node_group_configs:
            return None, []
        shapes = [{k: float(v) for k, v in group.resources.items()}
                  for group in config.node_group_configs if group.max_count != 0]
        return {k: float(v) for k, v in (state.get_max_resources_from_cluster_config() or {}).items()}, shapes
    except Exception:  # noqa: BLE001 - a missing ceiling only makes the check stricter
        return None, []


def preflight(stage: str, demands: list[Demand], all_at_once: bool = True) -> None:
    """Check ``demands`` against the connected cluster: raise ResourceError for what can never
    run, log a warning for what will queue."""
    for warning in assess(stage, demands, cluster_capacity(), all_at_once):
        log.warning(warning)
