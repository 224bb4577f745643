"""`ray job submit` against a real head: the study runs as a job, attaches to the cluster
through RAY_ADDRESS, and writes its report. The head is ours: started as a child process on
free loopback ports with its own temp dir, and ended by its PID (never `ray stop`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head on free loopback ports; yields (dashboard address, env); killed by PID."""
    gcs, dashboard, agent, metrics, client = _free_ports(5)
    bin_dir = str(Path(sys.executable).parent)
    marker = f"raydistill-test-head-{os.getpid()}-{gcs}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "RAYDISTILL_TEST_HEAD": marker}
    env.pop("RAY_ADDRESS", None)
    temp_dir = Path("/tmp") / f"rdh{os.getpid()}{gcs}"  # Ray's socket paths need a short temp dir
    head = subprocess.Popen(
        [str(Path(bin_dir) / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={gcs}", f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1",
         f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
         f"--ray-client-server-port={client}", f"--temp-dir={temp_dir}", "--num-cpus=2",
         "--include-dashboard=true"],
        env=env, stdout=(tmp_path / "head.log").open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_port(dashboard, 120)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything of this head's session left behind
        except ProcessLookupError:
            pass
        _kill_marked(marker)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _kill_marked(marker: str) -> None:
    """Kill what this head started in other sessions (Ray workers call setsid): every process
    whose environment carries our marker, and nothing else."""
    needle = f"RAYDISTILL_TEST_HEAD={marker}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


def _ray(env, *args, timeout=120) -> subprocess.CompletedProcess:
    ray_bin = str(Path(sys.executable).parent / "ray")
    return subprocess.run([ray_bin, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_study_runs_as_a_ray_job(ray_head, tmp_path, repo_root, tiny_overrides):
    address, env = ray_head
    runs = tmp_path / "runs"
    sets = [arg for o in tiny_overrides + [f"runs_dir={runs}", "sweep.seeds=[0]",
                                           "sweep.temperatures=[2.0]", "sweep.strategies=[top,random]"]
            for arg in ("--set", o)]
    sha = "0123456789abcdef0123456789abcdef01234567"  # what the README's job command passes
    runtime_env = json.dumps({"env_vars": {"RAYDISTILL_GIT_SHA": sha}})
    submitted = _ray(env, "job", "submit", "--address", address, "--working-dir", str(repo_root),
                     "--runtime-env-json", runtime_env,
                     "--no-wait", "--", "raydistill", "run", "configs/tiny-12l.yaml", "--no-serve", *sets)
    assert submitted.returncode == 0, submitted.stderr
    output = submitted.stdout + submitted.stderr
    job_id = re.search(r"raysubmit_\w+", output).group(0)
    client = JobSubmissionClient(address)
    deadline = time.monotonic() + 1200
    while client.get_job_status(job_id) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        assert time.monotonic() < deadline, "the job did not finish in 20 minutes"
        time.sleep(3)
    logs = _ray(env, "job", "logs", "--address", address, job_id).stdout
    assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, logs[-3000:]
    assert "=== summary ===" in logs and "exported student:" in logs
    run_dirs = [d for d in runs.glob("tiny-*") if not d.is_symlink()]
    assert len(run_dirs) == 1
    assert (runs / "tiny-latest").resolve() == run_dirs[0].resolve()  # the finished study's link
    report = (run_dirs[0] / "report.md").read_text()
    assert "top" in report and "random" in report
    assert (run_dirs[0] / "student" / "provenance.json").is_file()
    # the uploaded working directory has no .git: the code version comes from the job's env
    assert json.loads((run_dirs[0] / "meta.json").read_text())["git_sha"] == sha
