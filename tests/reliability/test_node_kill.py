"""A worker node lost mid-sweep: a real two-node cluster on this machine (a 1-CPU head and a
2-CPU worker node, both ``ray start`` processes), the sweep attached to it as a client would,
and the worker node SIGKILLed while a trial runs on it. Tune retries the lost trial on the
head; the sweep must end with every (strategy, T, seed) exactly once and the report must count
the retried trial by its last attempt: finished, its cell with its full n."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raydistill.platform.report import load_results, study_summary

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(1200)]

# 12 epochs (about 20 s a trial here): long enough that Tune runs trials on both nodes at once.
GRID = ["sweep.strategies=[top,random]", "sweep.temperatures=[2.0]", "sweep.seeds=[0,1,2]",
        "sweep.cpus_per_trial=1", "sweep.max_failures=1", "student.epochs=12"]


def test_a_node_killed_mid_sweep_loses_no_trial_and_the_report_counts_each_once(
        teacher_only_run, ray_multinode, tmp_path):
    from ray.util.state import list_nodes

    cluster = ray_multinode(head_cpus=1)
    worker = cluster.add_node(num_cpus=2)
    deadline = time.monotonic() + 120
    while len(list_nodes(address=cluster.dashboard, filters=[("state", "=", "ALIVE")])) < 2:
        assert time.monotonic() < deadline, "the worker node did not join"
        time.sleep(1)

    log = tmp_path / "sweep.log"
    sets = [arg for o in GRID for arg in ("--set", o)]
    proc = subprocess.Popen([sys.executable, "-m", "raydistill.cli", "sweep", str(teacher_only_run), *sets],
                            env={**cluster.env, "RAY_ADDRESS": cluster.gcs_address},
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not worker.runs("ray::ImplicitFunc"):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial ever ran on the worker node\n" + log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(2)  # well inside the trial: it has loaded its data and is training
        assert worker.kill() > 0
        proc.wait(timeout=900)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    output = log.read_text()
    assert proc.returncode == 0, output[-3000:]
    assert "Tune retries it" in output, output[-3000:]  # the kill hit a running trial

    df = load_results(teacher_only_run)
    keys = list(zip(df["strategy"], df["temperature"], df["seed"]))
    assert len(keys) == len(set(keys)) == 6, df[["strategy", "temperature", "seed", "status"]]
    assert set(df["status"]) == {"TERMINATED"}, df[["strategy", "seed", "status", "error"]]
    retried = [d for d in df["trial_dir"] if (Path(d) / "error.txt").is_file()]
    assert retried, "the retried trial left no error.txt from its first attempt"
    _, cells, _ = study_summary(teacher_only_run)
    assert sorted(cells["n"]) == [3, 3], cells
    print(f"node kill: {len(df)} trials, {len(retried)} retried after the kill, all TERMINATED, "
          f"cells n = {sorted(cells['n'])}")
