"""`raydistill serve` stops on SIGTERM: Serve and the Ray it started are gone within seconds, not
left running for minutes (what `kill`, systemd and Kubernetes send is SIGTERM, not Ctrl-C)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _session_pids(sid: int) -> set[int]:
    """Processes of session ``sid`` (the driver started it: Ray's processes join it)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    pids.add(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return pids


def test_sigterm_stops_serve_and_ray(tiny_run, get_free_port, tmp_path):
    port = get_free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "raydistill.cli", "serve", str(tiny_run), "--port", str(port)],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if "press Ctrl-C to stop" in log.read_text():  # deployed, now blocking
                break
            time.sleep(1)
        else:
            pytest.fail("serve never came up:\n" + log.read_text()[-3000:])
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10, trust_env=False).status_code == 200
        assert len(_session_pids(proc.pid)) > 1  # the driver and Ray's processes
        stopped = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        while _session_pids(proc.pid) and time.monotonic() - stopped < 60:
            time.sleep(0.5)
        left, took = _session_pids(proc.pid), time.monotonic() - stopped
        print(f"SIGTERM to everything stopped: {took:.1f} s")
        assert not left, f"still running {took:.0f} s after SIGTERM: {sorted(left)}"
        assert "shutting down" in log.read_text()
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2, trust_env=False)
    finally:
        try:  # whatever is left of the session we started: ours to end, by group id
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
