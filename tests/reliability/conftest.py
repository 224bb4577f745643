"""Real Ray nodes for the reliability tests: a head and worker nodes started with
``ray start --block`` as child processes on free loopback ports, each ended by its PID and by a
marker in its processes' environment (Ray's workers call setsid). Never ``ray stop``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

RAY_BIN = str(Path(sys.executable).parent / "ray")


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def marked_processes(marker: str) -> dict[int, str]:
    """pid -> command line of every process whose environment carries ``marker``."""
    needle = f"RAYDISTILL_TEST_NODE={marker}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            pass
    return found


def kill_marked(marker: str) -> int:
    """SIGKILL every process whose environment carries ``marker`` (and nothing else); returns
    how many."""
    killed = 0
    for pid in marked_processes(marker):
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            pass
    return killed


class Node:
    """One ``ray start --block`` process and everything it starts."""

    def __init__(self, args: list[str], env: dict[str, str], marker: str, log: Path):
        self.marker = marker
        self.process = subprocess.Popen([RAY_BIN, "start", "--block", *args], env={**env, "RAYDISTILL_TEST_NODE": marker},
                                        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)

    def runs(self, title: str) -> bool:
        """Whether a process of this node has ``title`` in its name (Ray titles a worker
        ``ray::<actor>.<method>`` while it runs one, e.g. ``ray::ImplicitFunc.train`` for a
        Tune trial)."""
        return any(title in cmd for cmd in marked_processes(self.marker).values())

    def kill(self) -> int:
        """The node dies at once, as a lost machine would."""
        return kill_marked(self.marker)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # `ray start --block` stops its processes on SIGTERM
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        kill_marked(self.marker)


class Cluster:
    """A head on loopback plus worker nodes added on demand; ``env`` attaches clients to it."""

    def __init__(self, tmp_path: Path, head_cpus: int):
        gcs, dashboard, agent, metrics, client = free_ports(5)
        self.tmp_path, self.gcs_address = tmp_path, f"127.0.0.1:{gcs}"
        self.dashboard = f"http://127.0.0.1:{dashboard}"
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        self.env.pop("RAY_ADDRESS", None)
        self.temp_dir = Path("/tmp") / f"rdh{os.getpid()}{gcs}"  # Ray's socket paths need a short temp dir
        self.nodes = [Node(["--head", "--node-ip-address=127.0.0.1", f"--port={gcs}", f"--dashboard-port={dashboard}",
                            "--dashboard-host=127.0.0.1", f"--dashboard-agent-listen-port={agent}",
                            f"--metrics-export-port={metrics}", f"--ray-client-server-port={client}",
                            f"--temp-dir={self.temp_dir}", f"--num-cpus={head_cpus}", "--include-dashboard=true"],
                           self.env, f"head-{os.getpid()}-{gcs}", tmp_path / "head.log")]
        wait_for_port(dashboard, 120)

    def add_node(self, num_cpus: int) -> Node:
        agent, grpc, metrics, runtime_env = free_ports(4)
        node = Node([f"--address={self.gcs_address}", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
                     f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={grpc}",
                     f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}"],
                    self.env, f"worker{len(self.nodes)}-{self.nodes[0].marker}", self.tmp_path / f"node{len(self.nodes)}.log")
        self.nodes.append(node)
        return node

    def shutdown(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def ray_head(tmp_path):
    """A 2-CPU Ray head on free loopback ports; yields (dashboard address, client env)."""
    cluster = Cluster(tmp_path, head_cpus=2)
    try:
        yield cluster.dashboard, cluster.env
    finally:
        cluster.shutdown()


@pytest.fixture
def ray_multinode(tmp_path):
    """``make(head_cpus)``: a head (more nodes through ``add_node``), all stopped at the end."""
    clusters = []

    def make(head_cpus: int) -> Cluster:
        clusters.append(Cluster(tmp_path, head_cpus))
        return clusters[-1]

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.shutdown()
