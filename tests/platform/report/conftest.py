"""Fixtures for the report package: hand-made run directories in Tune 2.60's on-disk format.

They mimic what Ray Tune 2.60 writes (checked against a real run): per trial a directory
with params.json, result.json (JSON lines; ``done`` true only on the last line of a trial whose
function returned, including one a ``stop`` criterion ended early), error.txt + error.pkl for a
trial that raised, and experiment_state-*.json whose trial_data entries are JSON strings.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from raydistill.platform import metrics as M
from raydistill.platform import report as R
from raydistill.platform.config import config_from_dict, dump_config
from raydistill.platform.export import Provenance, write_provenance
from raydistill.platform.rundir import RunDir, save_array

EPOCHS = 3
N_VAL = 200
N_TEST = 100
TEACHER_VAL_ACC = 0.9
LAYERS = {"top": [6, 7, 8, 9, 10, 11], "bottom": [0, 1, 2, 3, 4, 5], "odd": [1, 3, 5, 7, 9, 11]}
# (strategy, temperature) -> final val accuracy per seed (multiples of 1/N_VAL: logits match).
# "bottom" T=2 holds the best single seed (0.9) but "top" T=2 has the best mean.
# Test accuracy per seed of the winning cell (top T=2); the exported seed 0 has 0.81.
WINNER_TEST = [0.81, 0.79, 0.80]
# AL round accuracies on the N_VAL validation examples (the curve's numbers).
AL_ROUNDS = {"entropy": [0.61, 0.70, 0.76], "random": [0.61, 0.66, 0.70]}
CELLS = {
    ("top", 2.0): [0.80, 0.78, 0.79],
    ("top", 4.0): [0.76, 0.77, 0.775],
    ("bottom", 2.0): [0.90, 0.60, 0.62],
    ("bottom", 4.0): [0.60, 0.61, 0.605],
}


# ---------------------------------------------------------------------------------------------
# A hand-made run directory in Tune 2.60's on-disk format


def logits_with_accuracy(labels: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Binary logits whose argmax is right on exactly round(accuracy * N) examples."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    preds = labels.copy()
    wrong = rng.permutation(n)[: n - int(round(accuracy * n))]
    preds[wrong] = 1 - preds[wrong]
    logits = np.zeros((n, 2), np.float32)
    logits[np.arange(n), preds] = rng.uniform(0.5, 3.0, n)
    return logits


def write_trial(exp: Path, index: int, cfg: dict, accs: list[float], *, stopped_after: int | None = None,
                error: str | None = None, val_logits: np.ndarray | None = None,
                test_logits: np.ndarray | None = None, when: str = "2026-11-23_16-42-03",
                timestamp: int = 1795452127, prefix: str = "3a2b1") -> list[str]:
    """One trial directory as Tune writes it; returns its experiment_state entry."""
    tag = f"seed={cfg['seed']},strategy={cfg['strategy']},temperature={cfg['temperature']:.4f}"
    trial_id = f"{prefix}_{index:05d}"
    name = f"student_{trial_id}_{index}_{tag}_{when}"
    d = exp / name
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    (d / "params.pkl").write_bytes(b"not a pickle: the report must never unpickle")
    n_rows = stopped_after or len(accs)
    lines = []
    for epoch in range(n_rows):
        lines.append({
            M.TRAIN_LOSS: 1.0 / (epoch + 1), M.VAL_LOSS: 1.2 / (epoch + 1),
            M.VAL_ACCURACY: accs[epoch], M.EPOCH: epoch, M.FIDELITY: 0.8 + 0.05 * epoch,
            M.PARAMS: 1000, M.LAYERS: LAYERS[cfg["strategy"]], M.STRATEGY: cfg["strategy"],
            "timestamp": timestamp, "checkpoint_dir_name": None,
            M.DONE: error is None and epoch == n_rows - 1,
            M.TRAINING_ITERATION: epoch + 1, M.TRIAL_ID: trial_id, "date": "2026-11-23_16-42-07",
            "time_this_iter_s": 0.5, M.TIME_TOTAL_S: 0.5 * (epoch + 1), "pid": 1, "hostname": "vm",
            "node_ip": "192.0.2.2", "config": cfg, "time_since_restore": 0.5 * (epoch + 1),
            "iterations_since_restore": epoch + 1,
        })
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    if error:
        (d / "error.txt").write_text(
            "Failure # 1 (occurred at 2026-11-23_16-42-16)\nTraceback (most recent call last):\n"
            f"  File \"student.py\", line 1, in trainable\n{error}\n")
        (d / "error.pkl").write_bytes(b"\x80\x05garbage that would explode if unpickled")
    if val_logits is not None:
        np.save(d / "val_logits.npy", val_logits, allow_pickle=False)
    if test_logits is not None:
        np.save(d / "test_logits.npy", test_logits, allow_pickle=False)
    status = "ERROR" if error else "TERMINATED"
    trial = {"stub": False, "trainable_name": "student", "trial_id": trial_id, "config": cfg,
             "status": status, "relative_logdir": name, "storage": {"_type": "CLOUDPICKLE_FALLBACK",
                                                                    "value": "8005"}}
    meta = {"error_filename": "error.txt" if error else None,
            "pickled_error_filename": "error.pkl" if error else None,
            "num_failures": int(bool(error)), "last_result": lines[-1] if lines else {}}
    return [json.dumps(trial, indent=2), json.dumps(meta, indent=2)]


def make_run(root: Path, cells: dict = CELLS, *, extras: bool = True, files: bool = True) -> RunDir:
    """A run directory: config, labels, teacher and student logits, AL curve, Tune experiment.

    With ``extras``: one ERROR trial (high accuracy before it failed), one trial a stop
    criterion ended after 2 of 3 epochs, and a trial Tune listed but never started."""
    run = RunDir(root)
    run.root.mkdir(parents=True, exist_ok=True)
    run.config.write_text(dump_config(config_from_dict({"name": "fixture",
                                                        "student": {"epochs": EPOCHS}})))
    exp = run.tune_experiment
    exp.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels_val = rng.integers(0, 2, N_VAL)
    labels_test = rng.integers(0, 2, N_TEST)
    entries, index = [], 0
    for (strategy, temp), accs in cells.items():
        for seed, acc in enumerate(accs):
            cfg = {"strategy": strategy, "temperature": temp, "seed": seed, "alpha": 0.5, "lr": 0.002}
            history = [acc - 0.1, max(acc - 0.05, 0.0), acc]  # best == final
            logits = logits_with_accuracy(labels_val, acc, 100 * index + seed) if files else None
            # every trial's test logits (the confirmation re-tests the cells): the winner's at
            # WINNER_TEST, the others at their validation accuracy
            test_acc = WINNER_TEST[seed] if (strategy, temp) == ("top", 2.0) else acc
            test = logits_with_accuracy(labels_test, test_acc, 50 + 100 * index + seed) if files else None
            entries.append(write_trial(exp, index, cfg, history, val_logits=logits, test_logits=test))
            index += 1
    if extras:
        cfg = {"strategy": "odd", "temperature": 2.0, "seed": 0, "alpha": 0.5, "lr": 0.002}
        entries.append(write_trial(exp, index, cfg, [0.99], error="RuntimeError: CUDA out of memory"))
        cfg = {"strategy": "top", "temperature": 2.0, "seed": 3, "alpha": 0.5, "lr": 0.002}
        entries.append(write_trial(exp, index + 1, cfg, [0.95, 0.97, 0.99], stopped_after=2))
        pending = {"trial_id": "3a2b1_00099", "status": "PENDING", "relative_logdir": "never_started",
                   "config": {"strategy": "odd", "temperature": 4.0, "seed": 0}}
        entries.append([json.dumps(pending), json.dumps({"error_filename": None})])
    state = {"trial_data": entries, "runner_data": {"_session_str": "2026-11-23_16-42-03"},
             "stats": {"start_time": 1795452123.25}}
    (exp / "experiment_state-2026-11-23_16-42-03.json").write_text(json.dumps(state))
    (exp / "basic-variant-state-2026-11-23_16-42-03.json").write_text("{}")
    (exp / "tuner.pkl").write_bytes(b"not a pickle")
    if files:
        save_array(run.eval_labels("validation"), labels_val)
        save_array(run.eval_labels("test"), labels_test)
        # clusters of 10 examples; the first 20 test examples were seen by an earlier split
        save_array(run.eval_groups("validation"), np.arange(N_VAL) // 10)
        save_array(run.eval_groups("test"), np.arange(N_TEST) // 10)
        save_array(run.confirmation_mask, np.arange(N_TEST) >= 20)
        run.clusters.write_text(json.dumps({"unit": "film"}))
        save_array(run.teacher_logits("validation"), logits_with_accuracy(labels_val, TEACHER_VAL_ACC, 7))
        save_array(run.teacher_logits("test"), logits_with_accuracy(labels_test, 0.88, 8))
        save_array(run.student_logits("test"), logits_with_accuracy(labels_test, 0.81, 9))
        save_array(run.student_logits("validation"), logits_with_accuracy(labels_val, 0.8, 10))
        run.label_names.write_text(json.dumps(["negative", "positive"]))
        write_provenance(run.student, Provenance(
            role="student", num_layers=6, teacher_num_layers=12, strategy="top", teacher_layers=LAYERS["top"],
            temperature=2.0, alpha=0.5, seeds=[0, 1, 2], seed=0))
        write_provenance(run.teacher, Provenance(role="teacher", num_layers=12, teacher_num_layers=12,
                                                 validation={"accuracy": TEACHER_VAL_ACC}, test={"accuracy": 0.88}))
        run.al.mkdir(parents=True, exist_ok=True)
        run.al_curve.write_text(
            "acquisition,round,labeled_count,val_accuracy\n"
            "entropy,0,100,0.61\nentropy,1,150,0.70\nentropy,2,200,0.76\n"
            "random,0,100,0.61\nrandom,1,150,0.66\nrandom,2,200,0.70\n")
        for arm, accs in AL_ROUNDS.items():
            for r, acc in enumerate(accs):
                save_array(run.al / arm / f"val_logits_round{r}.npy", logits_with_accuracy(labels_val, acc, 300 + r))
    return run


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    return make_run(tmp_path / "runs" / "fixture-20261123-164203")


def make_frame(cells: dict) -> pd.DataFrame:
    """A hand-made results frame (what load_results returns), all trials completed."""
    rows = []
    for (strategy, temp), accs in cells.items():
        for seed, acc in enumerate(accs):
            rows.append({M.TRIAL_ID: f"{strategy}{temp}{seed}", M.STRATEGY: strategy,
                         M.TEMPERATURE: temp, M.SEED: seed, M.VAL_ACCURACY: acc,
                         M.TRAIN_LOSS: 0.3 + seed / 10, M.VAL_LOSS: 0.5 + seed / 10,
                         M.FIDELITY: 0.9, M.PARAMS: 1000, M.LAYERS: "6,7,8", "status": R.COMPLETED,
                         "trial_dir": None})
    return pd.DataFrame(rows)


@pytest.fixture
def fx() -> SimpleNamespace:
    """The helpers and constants above, for the test modules (conftest is not importable)."""
    return SimpleNamespace(
        make_run=make_run, make_frame=make_frame, write_trial=write_trial,
        logits_with_accuracy=logits_with_accuracy, CELLS=CELLS, N_VAL=N_VAL, N_TEST=N_TEST,
        TEACHER_VAL_ACC=TEACHER_VAL_ACC, WINNER_TEST=WINNER_TEST, EPOCHS=EPOCHS)
