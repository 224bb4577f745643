"""The report: Tune's trial files on disk -> results frame -> statistics -> report.md and plots.

Fixtures mimic what Ray Tune 2.60 writes (checked against a real run): per trial a directory
with params.json, result.json (JSON lines; ``done`` true only on the last line of a trial whose
function returned, including one a ``stop`` criterion ended early), error.txt + error.pkl for a
trial that raised, and experiment_state-*.json whose trial_data entries are JSON strings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from raydistill.platform import metrics as M
from raydistill.platform import report as R
from raydistill.platform.config import config_from_dict, dump_config
from raydistill.platform.errors import CheckpointError
from raydistill.platform.rundir import RunDir, save_array

pytestmark = pytest.mark.unit

EPOCHS = 3
N_VAL = 200
N_TEST = 100
TEACHER_VAL_ACC = 0.9
LAYERS = {"top": [6, 7, 8, 9, 10, 11], "bottom": [0, 1, 2, 3, 4, 5], "odd": [1, 3, 5, 7, 9, 11]}
# (strategy, temperature) -> final val accuracy per seed (multiples of 1/N_VAL: logits match).
# "bottom" T=2 holds the best single seed (0.9) but "top" T=2 has the best mean.
CELLS = {
    ("top", 2.0): [0.80, 0.78, 0.79],
    ("top", 4.0): [0.76, 0.77, 0.775],
    ("bottom", 2.0): [0.90, 0.60, 0.62],
    ("bottom", 4.0): [0.60, 0.61, 0.605],
}


# ---------------------------------------------------------------------------------------------
# A hand-made run directory in Tune 2.60's on-disk format


def _logits_with_accuracy(labels: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Binary logits whose argmax is right on exactly round(accuracy * N) examples."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    preds = labels.copy()
    wrong = rng.permutation(n)[: n - int(round(accuracy * n))]
    preds[wrong] = 1 - preds[wrong]
    logits = np.zeros((n, 2), np.float32)
    logits[np.arange(n), preds] = rng.uniform(0.5, 3.0, n)
    return logits


def _write_trial(exp: Path, index: int, cfg: dict, accs: list[float], *, stopped_after: int | None = None,
                 error: str | None = None, val_logits: np.ndarray | None = None) -> dict:
    """One trial directory as Tune writes it; returns its experiment_state entry."""
    tag = f"seed={cfg['seed']},strategy={cfg['strategy']},temperature={cfg['temperature']:.4f}"
    trial_id = f"3a2b1_{index:05d}"
    name = f"student_{trial_id}_{index}_{tag}_2026-11-23_16-42-03"
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
            "timestamp": 1795452127, "checkpoint_dir_name": None,
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
            logits = _logits_with_accuracy(labels_val, acc, 100 * index + seed) if files else None
            entries.append(_write_trial(exp, index, cfg, history, val_logits=logits))
            index += 1
    if extras:
        cfg = {"strategy": "odd", "temperature": 2.0, "seed": 0, "alpha": 0.5, "lr": 0.002}
        entries.append(_write_trial(exp, index, cfg, [0.99], error="RuntimeError: CUDA out of memory"))
        cfg = {"strategy": "top", "temperature": 2.0, "seed": 3, "alpha": 0.5, "lr": 0.002}
        entries.append(_write_trial(exp, index + 1, cfg, [0.95, 0.97, 0.99], stopped_after=2))
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
        save_array(run.teacher_logits("validation"), _logits_with_accuracy(labels_val, TEACHER_VAL_ACC, 7))
        save_array(run.teacher_logits("test"), _logits_with_accuracy(labels_test, 0.88, 8))
        save_array(run.student_logits("test"), _logits_with_accuracy(labels_test, 0.81, 9))
        save_array(run.student_logits("validation"), _logits_with_accuracy(labels_val, 0.8, 10))
        (run.labels / "label_names.json").write_text(json.dumps(["negative", "positive"]))
        (run.student / "provenance.json").write_text(json.dumps(
            {"strategy": "top", "teacher_layers": LAYERS["top"], "temperature": 2.0, "alpha": 0.5,
             "seeds": [0, 1, 2], "seed": 0, "metrics": {}}))
        run.al.mkdir(parents=True, exist_ok=True)
        run.al_curve.write_text(
            "acquisition,round,labeled_count,val_accuracy\n"
            "entropy,0,100,0.61\nentropy,1,150,0.70\nentropy,2,200,0.76\n"
            "random,0,100,0.61\nrandom,1,150,0.66\nrandom,2,200,0.70\n")
    return run


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    return make_run(tmp_path / "runs" / "fixture-20261123-164203")


def _frame(cells: dict) -> pd.DataFrame:
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


# ---------------------------------------------------------------------------------------------
# Reading Tune's files


def test_load_results_one_row_per_trial_with_status(run: RunDir) -> None:
    df = load = R.load_results(run.root)
    assert len(load) == 12 + 3
    by_status = df["status"].value_counts().to_dict()
    assert by_status == {R.COMPLETED: 12, R.ERRORED: 1, R.STOPPED_EARLY: 2}

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


# ---------------------------------------------------------------------------------------------
# Statistics


def test_summarize_means_stds_and_welch_p_values_equal_scipy() -> None:
    summary = R.summarize(_frame(CELLS), teacher_accuracy=TEACHER_VAL_ACC)
    assert list(zip(summary[M.STRATEGY], summary[M.TEMPERATURE])) == [
        ("top", 2.0), ("top", 4.0), ("bottom", 2.0), ("bottom", 4.0)]  # best mean first
    cells = summary.set_index([M.STRATEGY, M.TEMPERATURE])
    best = CELLS[("top", 2.0)]
    for cell, accs in CELLS.items():
        got = cells.loc[cell]
        assert got[R.N] == 3
        assert got[R.VAL_ACC_MEAN] == pytest.approx(np.mean(accs))
        assert got[R.VAL_ACC_STD] == pytest.approx(np.std(accs, ddof=1))
        assert got[R.RETAINED] == pytest.approx(np.mean(accs) / TEACHER_VAL_ACC)
        assert got[R.TRAIN_LOSS_MEAN] == pytest.approx(0.4) and got[R.VAL_LOSS_MEAN] == pytest.approx(0.6)
        if cell != ("top", 2.0):
            assert got[R.P_VALUE] == pytest.approx(stats.ttest_ind(accs, best, equal_var=False).pvalue)
    assert np.isnan(cells.loc[("top", 2.0)][R.P_VALUE])
    raw = summary[R.P_VALUE].to_numpy()
    np.testing.assert_allclose(summary[R.P_HOLM], R.holm(raw), equal_nan=True)


def test_holm_against_hand_values() -> None:
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    np.testing.assert_allclose(R.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(R.holm([0.5, 0.6]), [1.0, 1.0])  # 0.5*2 capped, 0.6 raised to 1
    got = R.holm([np.nan, 0.02, 0.04])  # NaN is not a test: m = 2
    assert np.isnan(got[0]) and got[1:] == pytest.approx([0.04, 0.04])
    assert R.holm([]).shape == (0,)


def test_winner_is_best_mean_not_best_single_seed() -> None:
    df = _frame(CELLS)
    best_single = df.loc[df[M.VAL_ACCURACY].idxmax()]
    assert (best_single[M.STRATEGY], best_single[M.TEMPERATURE]) == ("bottom", 2.0)
    assert R.choose_winner(R.summarize(df)) == ("top", 2.0)


def test_winner_ties_go_to_more_seeds_then_name() -> None:
    tie_n = R.summarize(_frame({("a", 2.0): [0.7, 0.8], ("b", 2.0): [0.8, 0.7, 0.75]}))
    assert R.choose_winner(tie_n) == ("b", 2.0)
    tie_name = R.summarize(_frame({("odd", 4.0): [0.7, 0.8], ("even", 2.0): [0.8, 0.7]}))
    assert R.choose_winner(tie_name) == ("even", 2.0)
    with pytest.raises(CheckpointError, match="no completed"):
        R.choose_winner(R.summarize(_frame({}).reindex(columns=_frame(CELLS).columns)))


def test_error_and_stopped_trials_are_never_averaged(run: RunDir) -> None:
    df = R.load_results(run.root)
    summary = R.summarize(df).set_index([M.STRATEGY, M.TEMPERATURE])
    # top T=2 has a 4th, stopped trial at 0.97 and odd has only an ERROR trial at 0.99.
    assert summary.loc[("top", 2.0)][R.N] == 3
    assert summary.loc[("top", 2.0)][R.VAL_ACC_MEAN] == pytest.approx(np.mean(CELLS[("top", 2.0)]))
    assert "odd" not in summary.index.get_level_values(0)


def test_significance_sentence_is_honest() -> None:
    close = R.summarize(_frame({("top", 2.0): [0.80, 0.70, 0.75], ("odd", 2.0): [0.74, 0.76, 0.72]}))
    assert "No cell differs significantly from the best at alpha=0.05" in R.significance_sentence(close)
    far = R.summarize(_frame({("top", 2.0): [0.80, 0.81, 0.80], ("odd", 2.0): [0.50, 0.51, 0.52]}))
    assert "1 of 1 cells are significantly worse" in R.significance_sentence(far)
    one_seed = R.summarize(_frame({("top", 2.0): [0.8], ("odd", 2.0): [0.7]}))
    assert "not tested" in R.significance_sentence(one_seed)


def test_paired_bootstrap_ci_contains_the_true_difference() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    # The other model is right wherever the best is, except on a true 5% of examples.
    best = (rng.random(n) < 0.85).astype(float)
    other = best.copy()
    flip = rng.permutation(np.flatnonzero(best))[: int(0.05 * n)]
    other[flip] = 0.0
    diff, low, high = R.paired_bootstrap(best, other, n_resamples=1000, seed=0)
    assert diff == pytest.approx(-0.05)
    assert low < -0.05 < high and high < 0  # pairing makes the CI tight and exclude 0
    assert (diff, low, high) == R.paired_bootstrap(best, other, n_resamples=1000, seed=0)  # seeded
    assert high - low < 0.02
    # Identical predictions: the CI is the single point 0.
    assert R.paired_bootstrap(best, best) == (0.0, 0.0, 0.0)


def test_bootstrap_vs_best_from_trial_logits(run: RunDir) -> None:
    df = R.load_results(run.root)
    labels = np.load(run.eval_labels("validation"))
    summary = R.bootstrap_vs_best(df, R.summarize(df), labels, n_resamples=500)
    cells = summary.set_index([M.STRATEGY, M.TEMPERATURE])
    assert np.isnan(cells.loc[("top", 2.0)][R.DIFF])  # the best is not compared with itself
    for cell in [("top", 4.0), ("bottom", 2.0), ("bottom", 4.0)]:
        # Seed-averaged correctness: the point estimate is exactly the difference of means.
        expected = np.mean(CELLS[cell]) - np.mean(CELLS[("top", 2.0)])
        got = cells.loc[cell]
        assert got[R.DIFF] == pytest.approx(expected)
        assert got[R.CI_LOW] <= expected <= got[R.CI_HIGH]
    assert cells.loc[("bottom", 4.0)][R.CI_HIGH] < 0


def test_bootstrap_skips_cells_without_logits(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r", extras=False, files=False)
    df = R.load_results(run.root)
    summary = R.bootstrap_vs_best(df, R.summarize(df), np.zeros(N_VAL, np.int64))
    assert summary[R.DIFF].isna().all()


# ---------------------------------------------------------------------------------------------
# Classification metrics


def test_ece_macro_f1_accuracy_against_hand_values() -> None:
    probs = np.array([[0.9, 0.1], [0.35, 0.65], [0.25, 0.75], [0.45, 0.55], [0.92, 0.08]])
    labels = np.array([0, 0, 1, 0, 1])
    # confidences 0.9, 0.65, 0.75, 0.55, 0.92; bins of 1/15: {0.9, 0.92} share (13/15, 14/15]
    # bin accuracy 1/2, confidence 0.91 -> 2/5 * 0.41; the others 1/5 * (0.65 + 0.25 + 0.55)
    assert R.expected_calibration_error(probs, labels) == pytest.approx((2 * 0.41 + 1.45) / 5)
    m = R.classification_metrics(np.log(probs), labels)
    assert m[M.ECE] == pytest.approx(0.454)
    assert m[M.ACCURACY] == pytest.approx(2 / 5)
    # preds 0 1 1 1 0: class 0 tp1 fp1 fn2 -> 2/5; class 1 tp1 fp2 fn1 -> 2/5
    assert m[M.MACRO_F1] == pytest.approx(0.4)
    preds, labels3 = np.array([0, 1, 1, 2, 2, 0]), np.array([0, 0, 1, 2, 2, 2])
    # class 0: 2/(2+1+1); class 1: 2/(2+1); class 2: 4/(4+1)
    assert R.f1_per_class(preds, labels3) == pytest.approx({0: 0.5, 1: 2 / 3, 2: 0.8})
    assert R.macro_f1(preds, labels3) == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    perfect = np.eye(3)[labels3] * 50.0
    assert R.classification_metrics(perfect, labels3)[M.ECE] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(CheckpointError, match="do not match"):
        R.classification_metrics(perfect, labels3[:2])


def test_count_safetensors_params_reads_only_the_header(tmp_path: Path) -> None:
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
                         "b": {"dtype": "F32", "shape": [5], "data_offsets": [48, 68]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(68))
    assert R.count_safetensors_params(tmp_path) == 17
    assert R.count_safetensors_params(tmp_path / "absent") is None


# ---------------------------------------------------------------------------------------------
# Tables and the report


def test_format_table_rows() -> None:
    summary = R.summarize(_frame(CELLS), teacher_accuracy=TEACHER_VAL_ACC)
    table = R.format_table(summary, {M.ACCURACY: TEACHER_VAL_ACC, M.PARAMS: 12345})
    lines = table.splitlines()
    assert lines[0].split("|")[1:-1] == [
        " strategy ", " T ", " train loss ", " val loss ", " val acc mean ± std ", " n ",
        " retained vs teacher ", " fidelity ", " params ", " p (Holm) ", " bootstrap CI "]
    assert len(lines) == 2 + len(CELLS) + 1
    first = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert first == ["top", "2", "0.4000", "0.6000", "0.7900 ± 0.0100", "3", "87.8%", "0.900",
                     "1,000", "best", "—"]
    holm_bottom4 = summary.set_index([M.STRATEGY, M.TEMPERATURE]).loc[("bottom", 4.0)][R.P_HOLM]
    assert lines[5].startswith("| bottom | 4 |") and f"| {holm_bottom4:.3g} |" in lines[5]
    assert lines[-1].startswith("| teacher |") and "0.9000" in lines[-1] and "12,345" in lines[-1]


def test_write_report_from_a_run_directory(run: RunDir) -> None:
    path = R.write_report(run.root)
    assert path == run.report
    text = path.read_text()
    assert "**Winner** (best mean validation accuracy over seeds): **top**, T=2" in text
    assert "| teacher |" in text and f"{TEACHER_VAL_ACC:.4f}" in text
    # Test metrics: chosen on validation, reported on test (the student's test logits: 0.81).
    assert "| student (winner) | 0.8100 |" in text and "| teacher | 0.8800 |" in text
    assert "Winner's per-class F1 (test): negative" in text
    assert "Note: the exported student" not in text  # provenance agrees with the winner
    # Not-averaged trials are listed separately with their reason.
    section = text.split("## Trials not averaged")[1]
    assert "RuntimeError: CUDA out of memory" in section and "| STOPPED_EARLY | 2/3 |" in section
    assert "| ERROR | 1/3 | RuntimeError" in section and "ran 2 of 3 epochs |" in section
    assert "ran 0 of 3 epochs (Tune status PENDING: the sweep did not finish)" in section
    assert "12 completed, 1 in error, 2 stopped early" in text
    assert "Bootstrap CI: 95% paired bootstrap" in text
    assert "| 200 | 0.7600 | 0.7000 |" in text  # the AL table: entropy vs random at 200 labels

    results = pd.read_csv(run.results_csv)
    summary = pd.read_csv(run.summary_csv)
    assert len(results) == 15 and set(results["status"]) == {R.COMPLETED, R.ERRORED, R.STOPPED_EARLY}
    assert len(summary) == 4 and summary[R.CI_LOW].notna().sum() == 3
    for name in (R.PLOT_VAL_ACCURACY, R.PLOT_LEARNING_CURVES, R.PLOT_ACTIVE_LEARNING):
        png = (run.plots / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_write_report_without_optional_files_and_with_no_completed_trial(tmp_path: Path) -> None:
    run = make_run(tmp_path / "bare", extras=False, files=False)
    text = R.write_report(run.root).read_text()
    assert "Bootstrap: skipped" in text and "Not available" in text
    assert not (run.plots / R.PLOT_ACTIVE_LEARNING).exists()
    assert (run.plots / R.PLOT_VAL_ACCURACY).stat().st_size > 0

    failed = make_run(tmp_path / "failed", cells={}, files=False)
    text = R.write_report(failed.root).read_text()
    assert "No trial completed" in text and "RuntimeError: CUDA out of memory" in text


def test_report_module_imports_without_ray(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r")
    code = ("import sys; sys.modules['ray'] = None  # any `import ray` now raises ImportError\n"
            "from raydistill.platform import report as r\n"
            f"print(r.choose_winner(r.summarize(r.load_results({str(run.root)!r}))))\n"
            "assert not [m for m in sys.modules if m.startswith('ray.')]\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "('top', 2.0)"


def test_report_notes_an_exported_student_that_is_not_the_winner(run: RunDir) -> None:
    (run.student / "provenance.json").write_text(json.dumps({"strategy": "bottom", "temperature": 4.0}))
    text = R.write_report(run.root).read_text()
    assert "Note: the exported student is bottom T=4.0, not this report's winner top T=2." in text


def test_logits_that_do_not_match_the_labels_are_a_clear_error(run: RunDir) -> None:
    save_array(run.student_logits("test"), np.zeros((7, 2), np.float32))
    with pytest.raises(CheckpointError, match=r"student/test_logits.npy has shape \(7, 2\)"):
        R.write_report(run.root)


def test_plot_active_learning_takes_the_curve_file(run: RunDir, tmp_path: Path) -> None:
    R.plot_active_learning(run.al_curve, tmp_path / "curve.png")  # as the pipeline calls it
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    run.al_curve.write_text("round,val_accuracy\n0,0.5\n")
    with pytest.raises(CheckpointError, match=r"lacks columns \['acquisition', 'labeled_count'\]"):
        R.plot_active_learning(run.al_curve, tmp_path / "bad.png")
    assert "## Active learning\n\nSkipped:" in R.write_report(run.root).read_text()
