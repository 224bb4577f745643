"""The private local Ray that ``raydistill`` starts binds the HTTP servers Ray lets us place
(its metrics export, the dashboard agent) to 127.0.0.1, not to every interface."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

_PROBE = """
import json
import ray
from raydistill.session import ray_session
with ray_session():
    node = ray._private.worker.global_worker.node
    print(json.dumps({"metrics": node.metrics_export_port, "agent": node.dashboard_agent_listen_port}))
"""


def _listening(port: int) -> set[str]:
    """The local addresses that listen on ``port`` (IPv4, from /proc/net/tcp)."""
    addresses = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            addresses.add(".".join(str(int(host[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return addresses


@pytest.mark.skipif(not Path("/proc/net/tcp").is_file(), reason="needs Linux /proc/net/tcp")
def test_private_ray_listens_on_loopback_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    script = tmp_path / "probe.py"
    # The probe prints the ports, then holds Ray up while we look (until stdin closes).
    script.write_text(_PROBE.replace("))\n", "), flush=True)\n    import sys; sys.stdin.read()\n", 1))
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        ports = {name: port for name, port in json.loads(proc.stdout.readline()).items() if port and port > 0}
        assert "metrics" in ports  # the dashboard agent's HTTP port is off without a dashboard
        for name, port in ports.items():
            assert _listening(port) == {"127.0.0.1"}, (name, port, _listening(port))
    finally:
        proc.stdin.close()
        proc.wait(timeout=120)
