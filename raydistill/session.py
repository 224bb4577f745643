"""The Ray session every command runs in: attach to a cluster (``RAY_ADDRESS``, as ``ray job
submit`` sets it) or start a private local Ray on loopback, and stop only what was started."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from raydistill.platform.errors import ClusterError

# Ray reads these when it starts; set before ``ray.init`` so local workers inherit them.
_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_DEDUP_LOGS": "1",
    # Tune's console box and its TensorBoard hint (into Ray's temporary session directory): the
    # sweep logs its own progress lines and points at RUN (teacher and trial events) instead.
    "RAY_AIR_NEW_OUTPUT": "0",
    # Ray's driver prints the raylet's messages (one when Serve shuts its controller down) with
    # ANSI colour codes, raw in a log file or a pipe; plain text instead.
    "RAY_COLOR_PREFIX": "0",
}


DASHBOARD_PORT = 8265
# Ray Serve's switches for each ``serve.ingress``, read when Serve's processes start. haproxy:
# Ray's HAProxy ingress in Ray's throughput-optimised mode (gRPC between replicas); each alone
# gained less (benchmarks/serve_overhead.py, benchmarks/RESULTS.md).
INGRESS_ENV = {"proxy": {}, "haproxy": {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}}


@contextmanager
def ray_session(verbose: bool = False, dashboard: bool = False, ingress: str = "proxy") -> Iterator[None]:
    """Attach to ``RAY_ADDRESS`` when set (``ray job submit``), else start a private local Ray,
    with Ray's dashboard on 127.0.0.1:8265 when ``dashboard`` (off by default: it costs a
    process and memory a laptop run does not need) and Serve's ``ingress`` (``serve.ingress``;
    an attached cluster's is its own, set where its head started).

    Never attaches to a stray head by accident (``address="local"``); shuts down what it started.
    """
    import ray

    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)
    ingress_env = INGRESS_ENV[ingress]
    before = {key: os.environ.get(key) for key in ingress_env}
    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or "local"
        kwargs: dict[str, Any] = {"address": address, "log_to_driver": verbose}
        if address == "local":
            os.environ.update(ingress_env)
            kwargs["include_dashboard"] = dashboard
            if dashboard:
                kwargs.update(dashboard_host="127.0.0.1", dashboard_port=DASHBOARD_PORT)
        elif ingress_env:
            from raydistill.platform.logs import log

            log.warning(f"serve.ingress={ingress}: {address}'s Serve uses the ingress its head was started "
                        f"with; start it with {' '.join(f'{k}={v}' for k, v in ingress_env.items())}")
        if not verbose:
            kwargs["logging_level"] = "ERROR"
        _check_reachable(address)
        try:
            with _loopback_node(address == "local"):
                ray.init(**kwargs)
        except (ConnectionError, TimeoutError) as err:
            raise ClusterError(_attach_hint(address, err)) from None
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()
        for key, value in before.items():  # the switch belongs to the Ray this session started
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextmanager
def _loopback_node(private: bool) -> Iterator[None]:
    """A private Ray's node address is 127.0.0.1, so the servers Ray places by it (the metrics
    export, the dashboard agent) listen on loopback only. ``ray.init`` turns 127.0.0.1 into the
    machine's address unless Ray's own single-machine switch (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``,
    read once at import) is off: flip it for the private node only, never when attaching."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = before and not private
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at a ``host:port`` address (Ray's
    own client retries a dead GCS address for minutes). Other forms (``local``, ``auto``,
    ``ray://``) are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ClusterError(_attach_hint(address, err)) from None


def _attach_hint(address: str, err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (f"could not attach to the Ray cluster at {address} ({first[:200]}). Check that its head "
            "is up and the address is right; a head started by Ray 2.60 enables token auth by "
            "default, so clients need RAY_AUTH_MODE=token (and the token) in their environment.")
