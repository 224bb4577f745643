"""SIGKILL the driver in the middle of the teacher stage (after round 0's acquisition, while
round 1 trains), then resume the run: every pick of every round equals an uninterrupted run's.
The driver and the local Ray it started run in their own process group, ours to end by id."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_a_driver_killed_mid_teacher_resumes_to_the_uninterrupted_picks(tiny_teacher_run, make_tiny_config, tmp_path):
    from raydistill.pipeline import StudyRun, new_run, open_run, run_stages
    from raydistill.platform import manifest

    _, run0, _, info0 = tiny_teacher_run
    cfg = make_tiny_config(tmp_path / "runs")
    run = new_run(cfg)
    shutil.copytree(run0.tokenizer, run.tokenizer)  # same vocabulary: the runs differ only in the kill
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tmp_path / "driver.log"
    proc = subprocess.Popen([sys.executable, "-m", "raydistill.cli", "run", "--resume", str(run.root), "--force", "--no-serve"],
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    state = run.al / "entropy" / "state.json"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            picks = json.loads(state.read_text())["learner"]["picks"] if state.is_file() else []
            if len(picks) >= 2:  # round 1's acquisition is recorded: round 1 is training now
                break
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
        proc.wait(timeout=60)
    assert "teacher" not in manifest.finished(run)
    run, cfg = open_run(run.root)
    info = run_stages(StudyRun(cfg, run), ["teacher"])["teacher"]
    assert info["labeled"] == info0["labeled"]
    arms = [d.name for d in run0.al.iterdir() if (d / "state.json").is_file()]
    assert "entropy" in arms
    for arm in arms:
        undisturbed = json.loads((run0.al / arm / "state.json").read_text())["learner"]
        resumed = json.loads((run.al / arm / "state.json").read_text())["learner"]
        assert resumed["picks"] == undisturbed["picks"], arm
