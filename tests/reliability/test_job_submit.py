"""`ray job submit` against a real head: the study runs as a job, attaches to the cluster
through RAY_ADDRESS, and writes its report. The head is ours (``conftest.py``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


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
                     "--no-wait", "--", "raydistill", "run", "tiny-12l", "--force", "--no-serve", *sets)
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
