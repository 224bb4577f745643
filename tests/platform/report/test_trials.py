"""Tune's trial files on disk -> one row per trial, with status, and duplicates never averaged twice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from raydistill.platform import metrics as M
from raydistill.platform import report as R
from raydistill.platform.errors import CheckpointError
from raydistill.platform.rundir import RunDir

pytestmark = pytest.mark.unit


def test_load_results_one_row_per_trial_with_status(run: RunDir) -> None:
    df = R.load_results(run.root)
    assert len(df) == 12 + 3
    assert df["status"].value_counts().to_dict() == {R.COMPLETED: 12, R.ERRORED: 1, R.STOPPED_EARLY: 2}

    err = df[df["status"] == R.ERRORED].iloc[0]
    assert (err[M.STRATEGY], err["error"]) == ("odd", "RuntimeError: CUDA out of memory")
    stopped = df[(df[M.STRATEGY] == "top") & (df[M.SEED] == 3)].iloc[0]
    # done: true on its last line (a stop criterion), but 2 of 3 epochs: not complete.
    assert (stopped["status"], stopped["epochs"], stopped["expected_epochs"]) == (R.STOPPED_EARLY, 2, 3)
    pending = df[df[M.TRIAL_ID] == "3a2b1_00099"].iloc[0]  # in Tune's state, no directory yet
    assert (pending["status"], pending["epochs"]) == (R.STOPPED_EARLY, 0) and pd.isna(pending["trial_dir"])

    row = df[(df[M.STRATEGY] == "bottom") & (df[M.TEMPERATURE] == 2.0) & (df[M.SEED] == 0)].iloc[0]
    assert row[M.LAYERS] == "0,1,2,3,4,5"
    assert row[M.VAL_ACCURACY] == pytest.approx(0.90)
    assert row[M.BEST_VAL_ACCURACY] == pytest.approx(0.90)
    assert row[M.VAL_LOSS] == pytest.approx(0.4) and row[M.TRAIN_LOSS] == pytest.approx(1 / 3)
    assert row[M.FIDELITY] == pytest.approx(0.9) and row[M.PARAMS] == 1000
    assert (row["epochs"], row[M.ALPHA], row[M.LR]) == (3, 0.5, 0.002)
    assert row[M.TRIAL_ID].startswith("3a2b1_") and Path(row["trial_dir"]).is_dir()


def test_load_results_reads_experiment_dir_and_files_without_state(run: RunDir) -> None:
    for state in run.tune_experiment.glob("experiment_state-*.json"):
        state.unlink()
    df = R.load_results(run.tune_experiment)  # a notebook may point at the experiment itself
    # Without Tune's state the files still tell ERROR (error.txt, not done) and early stops.
    assert df["status"].value_counts().to_dict() == {R.COMPLETED: 12, R.ERRORED: 1, R.STOPPED_EARLY: 1}


def test_a_truncated_result_line_is_skipped(run: RunDir) -> None:
    trial = next(run.tune_experiment.glob("student_3a2b1_00000_*"))
    with open(trial / "result.json", "a") as f:
        f.write('{"val_accuracy": 0.3, "epo')  # a crash mid-write
    df = R.load_results(run.root)
    assert df[df[M.TRIAL_ID] == "3a2b1_00000"].iloc[0][M.VAL_ACCURACY] == pytest.approx(0.80)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_load_results_without_trials_is_a_clear_error(tmp_path: Path, make: str) -> None:
    if make == "empty":
        RunDir(tmp_path).tune_experiment.mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"tune/students"):
        R.load_results(tmp_path)


def test_a_seed_that_ran_twice_is_counted_once_the_newest(run: RunDir, fx) -> None:
    # A second `raydistill sweep RUN` without --resume: top T=2 seed 1 again, a day later,
    # at 0.50 (the old run had 0.78), and bottom T=4 seed 0 again but *older* by its timestamp.
    cfg = {"strategy": "top", "temperature": 2.0, "seed": 1, "alpha": 0.5, "lr": 0.002}
    fx.write_trial(run.tune_experiment, 0, cfg, [0.4, 0.45, 0.50], when="2026-11-24_09-00-00",
                   timestamp=1795500000, prefix="9f9f9")
    cfg = {"strategy": "bottom", "temperature": 4.0, "seed": 0, "alpha": 0.5, "lr": 0.002}
    fx.write_trial(run.tune_experiment, 1, cfg, [0.9, 0.9, 0.9], when="2026-11-22_09-00-00",
                   timestamp=1795300000, prefix="9f9f9")
    df = R.load_results(run.root)
    dups = df[df["status"] == R.DUPLICATE].set_index(M.TRIAL_ID)
    assert sorted(dups.index) == ["3a2b1_00001", "9f9f9_00001"]
    assert dups.loc["3a2b1_00001", "duplicate_of"] == "9f9f9_00000"
    summary = R.summarize(df).set_index([M.STRATEGY, M.TEMPERATURE])
    top = fx.CELLS[("top", 2.0)]
    assert summary.loc[("top", 2.0)]["n"] == 3  # never averaged twice
    assert summary.loc[("top", 2.0)]["val_accuracy_mean"] == pytest.approx((top[0] + 0.50 + top[2]) / 3)
    assert summary.loc[("bottom", 4.0)]["val_accuracy_mean"] == pytest.approx(sum(fx.CELLS[("bottom", 4.0)]) / 3)
    text = R.write_report(run.root).read_text()
    note = text.split("## Duplicates ignored")[1]
    assert "2 trial(s) repeat" in note and "| 3a2b1_00001 | top | 2 | 1 | 0.7800 | 9f9f9_00000 |" in note
    assert "2 duplicates ignored" in text


def test_report_package_imports_without_ray(tmp_path: Path, fx) -> None:
    run = fx.make_run(tmp_path / "r")
    code = ("import sys; sys.modules['ray'] = None  # any `import ray` now raises ImportError\n"
            "from raydistill.platform import report as r\n"
            f"print(r.choose_winner(r.summarize(r.load_results({str(run.root)!r}))))\n"
            "assert not [m for m in sys.modules if m.startswith('ray.')]\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "('top', 2.0)"


def test_old_import_names_still_work() -> None:
    # the names cli.py, pipeline.py, trainables/student.py and test_sweep.py import
    callers = ["choose_winner", "format_table", "load_results", "plot_active_learning", "study_summary",
               "summarize", "verdict_sentence", "write_report"]
    assert set(callers) <= set(json.loads(json.dumps(R.__all__)))
    assert all(callable(getattr(R, name)) for name in R.__all__ if not name.isupper())


@pytest.mark.parametrize("retried_after_error, status", [(True, R.COMPLETED), (False, R.ERRORED)])
def test_a_trial_is_counted_by_its_last_attempt(run: RunDir, fx, retried_after_error, status) -> None:
    # A node died under bottom T=4 seed 3: Tune wrote error.txt, retried the trial in the same
    # directory and it reported every epoch afterwards. The first attempt's error.txt stays, and
    # Tune's final sync rewrites every trial file, so only the time written inside it counts.
    import os
    import time

    cfg = {"strategy": "bottom", "temperature": 4.0, "seed": 3, "alpha": 0.5, "lr": 0.002}
    timestamp = 1795452127
    fx.write_trial(run.tune_experiment, 50, cfg, [0.5, 0.55, 0.6], error="ray.exceptions.NodeDiedError",
                   timestamp=timestamp)
    error = next(run.tune_experiment.glob("*_00050_*")) / "error.txt"
    when = timestamp - 60 if retried_after_error else timestamp + 60
    occurred = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(when))
    error.write_text(error.read_text().replace("occurred at 2026-11-23_16-42-16", f"occurred at {occurred}"))
    synced = timestamp + 600  # the end-of-experiment sync
    os.utime(error, (synced, synced))
    df = R.load_results(run.root).set_index(M.TRIAL_ID)
    assert df.loc["3a2b1_00050", "status"] == status
    n = R.summarize(df.reset_index()).set_index([M.STRATEGY, M.TEMPERATURE]).loc[("bottom", 4.0), "n"]
    assert n == (4 if retried_after_error else 3)
