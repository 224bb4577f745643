"""Preflight: compare what a stage will ask Ray for with what the cluster has, before it starts.

Ray queues a request it cannot place and waits forever; a user sees a silent hang. Failing
here names the settings to change instead.
"""

from __future__ import annotations

import ray

from raydistill.platform.errors import ResourceError


def preflight(stage: str, requests: dict[str, tuple[float, str]]) -> None:
    """Raise ResourceError when the summed ``requests`` do not fit the cluster.

    ``requests`` maps a resource ("CPU", "GPU") to (amount, the config settings it comes from).
    """
    available = ray.cluster_resources()
    problems = []
    for resource, (amount, settings) in requests.items():
        have = float(available.get(resource, 0.0))
        if amount > have + 1e-9:
            problems.append(
                f"{stage} needs {amount:g} {resource} at once ({settings}) "
                f"but the cluster has {have:g}"
            )
    if problems:
        raise ResourceError("; ".join(problems) + ". Lower those settings or add nodes.")
