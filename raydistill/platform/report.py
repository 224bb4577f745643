"""Trial result files on disk -> DataFrame -> statistics, tables, plots, ``report.md``.

The report reads what Tune wrote, never through Ray (``platform/`` runs where Ray is not
installed). What Tune 2.60 puts in an experiment directory (checked against a real run):

- one subdirectory per trial, ``<trainable>_<id>_<n>_<tag>_<date>``, holding ``params.json``
  (the trial's config), ``result.json`` (JSON lines, one per ``tune.report``, plus Tune's keys
  ``done``, ``training_iteration``, ``trial_id``, ``time_total_s``, ``config``, ...),
  ``progress.csv``, ``params.pkl`` and whatever the trial wrote there (``val_logits.npy``);
- ``done`` is true only on the last line of a trial whose function returned -- and also on the
  last line of a trial a ``stop`` criterion ended early (Tune calls both TERMINATED), so
  "complete" is decided by counting epochs against the configured number;
- a trial that raised has ``error.txt`` (the traceback) and ``error.pkl`` (never unpickled
  here), and its last line has ``done: false``;
- ``experiment_state-<session>.json`` is plain JSON ``{"trial_data": [[trial, meta], ...]}``,
  each element a JSON string: ``trial`` holds ``status`` (PENDING / RUNNING / TERMINATED /
  ERROR), ``trial_id``, ``relative_logdir`` and ``config``; ``meta`` holds ``error_filename``.
  Tune rewrites it periodically, so it can lag the trial files; the newest one is read.

Statistics follow DESIGN.md "Student trial": only completed trials are averaged; the winner has
the best *mean* validation accuracy over seeds; each cell is compared with the best by Welch's
t-test over seeds (Holm-adjusted) and by a paired bootstrap over validation examples; the
winner's test metrics are read from the exported student's logits.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raydistill.platform import metrics as M
from raydistill.platform.errors import CheckpointError
from raydistill.platform.rundir import RunDir, atomic_write_text

# Trial status in the results frame. Only COMPLETED trials are averaged.
COMPLETED = "TERMINATED"
ERRORED = "ERROR"
STOPPED_EARLY = "STOPPED_EARLY"

SIGNIFICANCE_LEVEL = 0.05
ECE_BINS = 15
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0

# Columns of the per-cell summary (besides strategy and temperature).
N = "n"
VAL_ACC_MEAN = "val_accuracy_mean"
VAL_ACC_STD = "val_accuracy_std"
TRAIN_LOSS_MEAN = "train_loss_mean"
VAL_LOSS_MEAN = "val_loss_mean"
FIDELITY_MEAN = "fidelity_mean"
RETAINED = "retained"
P_VALUE = "p_value"
P_HOLM = "p_holm"
DIFF = "bootstrap_diff"
CI_LOW = "ci_low"
CI_HIGH = "ci_high"
CELL = [M.STRATEGY, M.TEMPERATURE]

PLOT_VAL_ACCURACY = "val_accuracy.png"
PLOT_LEARNING_CURVES = "learning_curves.png"
PLOT_ACTIVE_LEARNING = "active_learning.png"

_TRIAL_ID_RE = re.compile(r"_([0-9a-f]{5}_\d{5})_\d+_")

# ---------------------------------------------------------------------------------------------
# Reading Tune's files


@dataclass
class _Trial:
    """One trial as found on disk."""

    name: str
    trial_dir: Path | None
    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    tune_status: str | None = None
    trial_id: str | None = None


def find_experiment(path: str | Path) -> Path:
    """The Tune experiment directory for a run directory (or an experiment directory itself).

    Raises CheckpointError when there is none or it holds no trials."""
    path = Path(path).expanduser().resolve()
    candidates = [RunDir(path).tune_experiment, path]
    for exp in candidates:
        if exp.is_dir() and (_trial_dirs(exp) or list(exp.glob("experiment_state-*.json"))):
            return exp
    exp = candidates[0]
    if exp.is_dir():
        raise CheckpointError(f"the Tune experiment {exp} holds no trials (did the sweep start?)")
    raise CheckpointError(
        f"no Tune experiment at {exp}: {path} is not a run directory with a finished sweep "
        "(run `raydistill sweep <run dir>` first)"
    )


def _trial_dirs(exp: Path) -> list[Path]:
    return sorted(
        d for d in exp.iterdir()
        if d.is_dir() and ((d / "params.json").is_file() or (d / "result.json").is_file())
    )


def _read_state(exp: Path) -> dict[str, dict[str, Any]]:
    """Tune's newest experiment state, by trial directory name: status, trial_id, config."""
    # Newest by the session timestamp in the name: a restored run rewrites the old file too,
    # so modification times do not tell which one is current.
    files = sorted(exp.glob("experiment_state-*.json"), key=lambda p: p.name)
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_text(encoding="utf-8"))
        entries = state.get("trial_data", [])
    except (OSError, ValueError, AttributeError):
        return {}  # a half-written snapshot: the trial files still say everything we need
    out: dict[str, dict[str, Any]] = {}
    for entry in entries:
        try:
            trial = json.loads(entry[0])
            meta = json.loads(entry[1])
        except (ValueError, TypeError, IndexError):
            continue
        key = trial.get("relative_logdir") or trial.get("trial_id")
        if key:
            out[key] = {"status": trial.get("status"), "trial_id": trial.get("trial_id"),
                        "config": trial.get("config") or {}, "error": meta.get("error_filename")}
    return out


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """result.json's lines; an undecodable line (a crash mid-write) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _read_error(trial_dir: Path) -> str | None:
    """The exception line of error.txt (its last non-empty line), or None without one."""
    path = trial_dir / "error.txt"
    if not path.is_file():
        return None
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return (lines[-1] if lines else "error.txt is empty")[:300]


def _read_trials(exp: Path) -> list[_Trial]:
    state = _read_state(exp)
    trials = []
    for d in _trial_dirs(exp):
        info = state.pop(d.name, {})
        params = d / "params.json"
        try:
            config = json.loads(params.read_text(encoding="utf-8")) if params.is_file() else {}
        except ValueError:
            config = {}
        trials.append(_Trial(d.name, d, config or info.get("config", {}), _read_rows(d / "result.json"),
                             _read_error(d), info.get("status"), info.get("trial_id")))
    for name, info in state.items():  # listed by Tune but never started (no directory yet)
        trials.append(_Trial(name, None, info["config"], tune_status=info["status"],
                             trial_id=info["trial_id"]))
    return trials


def _epochs_done(rows: list[dict[str, Any]]) -> int:
    epochs = {r[M.EPOCH] for r in rows if r.get(M.EPOCH) is not None}
    return len(epochs) if epochs else len(rows)


def _status(trial: _Trial, epochs: int, expected: int | None) -> str:
    # Tune 2.60 does not always write a final ``done: true`` line (not with reuse_actors), so a
    # trial is complete when it reported every configured epoch and did not error.
    done = bool(trial.rows) and trial.rows[-1].get(M.DONE) is True
    if trial.tune_status == ERRORED or (trial.error is not None and not done):
        return ERRORED
    if trial.rows and (epochs >= expected if expected is not None else done):
        return COMPLETED
    return STOPPED_EARLY


def _run_root(path: Path, exp: Path) -> Path | None:
    if exp == RunDir(path).tune_experiment:
        return RunDir(path).root
    return exp.parent.parent if exp.parent.name == "tune" else None


def _read_run_config(root: Path | None) -> dict[str, Any]:
    if root is None or not (root / "config.yaml").is_file():
        return {}
    try:
        tree = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return tree if isinstance(tree, dict) else {}


def _configured_epochs(root: Path | None) -> int | None:
    epochs = (_read_run_config(root).get("student") or {}).get("epochs")
    return int(epochs) if isinstance(epochs, int) else None


def _last(rows: list[dict[str, Any]], key: str) -> Any:
    for row in reversed(rows):
        if row.get(key) is not None:
            return row[key]
    return None


def _trial_record(trial: _Trial, expected: int | None) -> dict[str, Any]:
    rows, cfg = trial.rows, trial.config
    epochs = _epochs_done(rows)
    expected = int(cfg["epochs"]) if isinstance(cfg.get("epochs"), int) else expected
    accs = [r[M.VAL_ACCURACY] for r in rows if r.get(M.VAL_ACCURACY) is not None]
    layers = _last(rows, M.LAYERS)
    trial_id = _last(rows, M.TRIAL_ID) or trial.trial_id
    if trial_id is None:
        match = _TRIAL_ID_RE.search(trial.name)
        trial_id = match.group(1) if match else trial.name
    return {
        M.TRIAL_ID: trial_id,
        M.STRATEGY: cfg.get(M.STRATEGY, _last(rows, M.STRATEGY)),
        M.TEMPERATURE: cfg.get(M.TEMPERATURE),
        M.SEED: cfg.get(M.SEED),
        M.ALPHA: cfg.get(M.ALPHA),
        M.LR: cfg.get(M.LR),
        M.LAYERS: ",".join(str(i) for i in layers) if isinstance(layers, list) else layers,
        M.PARAMS: _last(rows, M.PARAMS),
        "status": _status(trial, epochs, expected),
        "epochs": epochs,
        "expected_epochs": expected,
        M.VAL_ACCURACY: accs[-1] if accs else None,
        M.BEST_VAL_ACCURACY: max(accs) if accs else None,
        M.VAL_LOSS: _last(rows, M.VAL_LOSS),
        M.TRAIN_LOSS: _last(rows, M.TRAIN_LOSS),
        M.FIDELITY: _last(rows, M.FIDELITY),
        M.TIME_TOTAL_S: _last(rows, M.TIME_TOTAL_S),
        "tune_status": trial.tune_status,
        "error": trial.error,
        "trial_dir": str(trial.trial_dir) if trial.trial_dir else None,
    }


def load_results(run_dir: str | Path, expected_epochs: int | None = None) -> pd.DataFrame:
    """One row per trial of the run's student sweep, read from Tune's files on disk.

    ``run_dir`` is a run directory (or a Tune experiment directory). ``status`` is TERMINATED
    (all configured epochs, finished), ERROR (the trainable raised) or STOPPED_EARLY (fewer
    epochs than configured, or never finished). The configured epoch count is the trial's
    ``epochs`` config, else ``expected_epochs``, else ``student.epochs`` of the run's
    config.yaml, else the most epochs any trial ran. Raises CheckpointError when there is no
    experiment or it holds no trials."""
    exp = find_experiment(run_dir)
    trials = _read_trials(exp)
    if not trials:
        raise CheckpointError(f"the Tune experiment {exp} holds no trials")
    if expected_epochs is None:
        expected_epochs = _configured_epochs(_run_root(Path(run_dir).resolve(), exp))
    if expected_epochs is None:
        expected_epochs = max((_epochs_done(t.rows) for t in trials if t.error is None), default=0)
    df = pd.DataFrame([_trial_record(t, expected_epochs) for t in trials])
    return df.sort_values([M.STRATEGY, M.TEMPERATURE, M.SEED, M.TRIAL_ID],
                          na_position="last", kind="stable").reset_index(drop=True)


def load_history(run_dir: str | Path) -> pd.DataFrame:
    """One row per reported epoch of every trial: trial_id, strategy, temperature, seed, epoch,
    train/val loss, val accuracy (the last report wins when an epoch was reported twice, as
    after a restore). Join with :func:`load_results` on trial_id for the status."""
    exp = find_experiment(run_dir)
    records = []
    for t in _read_trials(exp):
        for row in t.rows:
            records.append({
                M.TRIAL_ID: row.get(M.TRIAL_ID), M.STRATEGY: t.config.get(M.STRATEGY),
                M.TEMPERATURE: t.config.get(M.TEMPERATURE), M.SEED: t.config.get(M.SEED),
                M.EPOCH: row.get(M.EPOCH), M.TRAIN_LOSS: row.get(M.TRAIN_LOSS),
                M.VAL_LOSS: row.get(M.VAL_LOSS), M.VAL_ACCURACY: row.get(M.VAL_ACCURACY),
            })
    cols = [M.TRIAL_ID, M.STRATEGY, M.TEMPERATURE, M.SEED, M.EPOCH, M.TRAIN_LOSS, M.VAL_LOSS,
            M.VAL_ACCURACY]
    hist = pd.DataFrame(records, columns=cols)
    return hist.drop_duplicates([M.TRIAL_ID, M.EPOCH], keep="last").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Statistics over seeds


def completed(df: pd.DataFrame) -> pd.DataFrame:
    """The trials that ran every configured epoch: the only ones averaged."""
    return df[df["status"] == COMPLETED]


def not_completed(df: pd.DataFrame) -> pd.DataFrame:
    """ERROR and STOPPED_EARLY trials: listed in the report, never averaged."""
    return df[df["status"] != COMPLETED]


def _ranked(summary: pd.DataFrame) -> pd.DataFrame:
    """Best first: highest mean val accuracy, then more seeds, then strategy name, then T."""
    key = summary.assign(_mean=-summary[VAL_ACC_MEAN].round(12), _n=-summary[N])
    return summary.loc[key.sort_values(["_mean", "_n", M.STRATEGY, M.TEMPERATURE],
                                       kind="stable").index]


def choose_winner(summary: pd.DataFrame) -> tuple[str, float]:
    """The (strategy, temperature) with the best MEAN validation accuracy over seeds.

    Ties go to the cell with more completed seeds, then to the alphabetically first strategy,
    then the lower temperature. Raises CheckpointError when no cell has a completed trial."""
    if summary.empty:
        raise CheckpointError("no completed student trial: there is no winner to choose")
    best = _ranked(summary).iloc[0]
    return str(best[M.STRATEGY]), float(best[M.TEMPERATURE])


def holm(pvalues: Any) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as given; NaN stays NaN and is not counted).

    Sorted ascending, the i-th (0-based) of m is multiplied by (m - i), then a running maximum
    keeps the order, and values are capped at 1."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def welch_p(a: Any, b: Any) -> float:
    """Two-sided Welch's t-test p-value (unequal variances); NaN with fewer than 2 per group."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variance in both groups -> NaN
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def summarize(df: pd.DataFrame, teacher_accuracy: float | None = None) -> pd.DataFrame:
    """One row per (strategy, temperature), best mean first, from COMPLETED trials only.

    Columns: n (completed seeds), val accuracy mean and std (ddof=1; NaN for one seed),
    train/val loss means, fidelity mean, retained (mean / teacher val accuracy; NaN without a
    teacher accuracy), params, layers, Welch p-value vs the best cell over seeds and its
    Holm-adjusted value (NaN for the best cell itself), and empty bootstrap columns that
    :func:`bootstrap_vs_best` fills."""
    done = completed(df)
    cols = [*CELL, N, VAL_ACC_MEAN, VAL_ACC_STD, TRAIN_LOSS_MEAN, VAL_LOSS_MEAN, FIDELITY_MEAN,
            RETAINED, M.PARAMS, M.LAYERS, P_VALUE, P_HOLM, DIFF, CI_LOW, CI_HIGH]
    if done.empty:
        return pd.DataFrame(columns=cols)
    numeric = done.assign(**{c: pd.to_numeric(done[c], errors="coerce")
                             for c in (M.VAL_ACCURACY, M.TRAIN_LOSS, M.VAL_LOSS, M.FIDELITY,
                                       M.PARAMS)})
    summary = numeric.groupby(CELL, sort=True, dropna=False).agg(**{
        N: (M.VAL_ACCURACY, "count"),
        VAL_ACC_MEAN: (M.VAL_ACCURACY, "mean"),
        VAL_ACC_STD: (M.VAL_ACCURACY, "std"),
        TRAIN_LOSS_MEAN: (M.TRAIN_LOSS, "mean"),
        VAL_LOSS_MEAN: (M.VAL_LOSS, "mean"),
        FIDELITY_MEAN: (M.FIDELITY, "mean"),
        M.PARAMS: (M.PARAMS, "median"),
        M.LAYERS: (M.LAYERS, "first"),
    }).reset_index()
    summary[RETAINED] = summary[VAL_ACC_MEAN] / teacher_accuracy if teacher_accuracy else np.nan
    summary = _ranked(summary).reset_index(drop=True)
    best = summary.iloc[0]
    accs = {cell: g[M.VAL_ACCURACY].to_numpy() for cell, g in numeric.groupby(CELL, dropna=False)}
    best_accs = accs[(best[M.STRATEGY], best[M.TEMPERATURE])]
    summary[P_VALUE] = [np.nan if i == 0 else welch_p(accs[(s, t)], best_accs)
                        for i, (s, t) in enumerate(zip(summary[M.STRATEGY], summary[M.TEMPERATURE]))]
    summary[P_HOLM] = holm(summary[P_VALUE])
    summary[DIFF] = summary[CI_LOW] = summary[CI_HIGH] = np.nan
    return summary[cols]


# ---------------------------------------------------------------------------------------------
# Paired bootstrap over validation examples


def paired_bootstrap(
    correct_best: Any, correct_other: Any, n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED, confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Paired bootstrap of mean(correct_other - correct_best) over examples.

    Inputs are per-example correctness in [0, 1] (a seed average is allowed), same length.
    Every resample draws the same example indices for both, so their correlation is kept.
    Returns (difference, ci_low, ci_high): a percentile interval at ``confidence``."""
    d = np.asarray(correct_other, dtype=float) - np.asarray(correct_best, dtype=float)  # [N]
    if d.ndim != 1 or len(d) == 0:
        raise ValueError(f"need two equal-length 1-d arrays, got a difference of shape {d.shape}")
    rng = np.random.default_rng(seed)
    n = len(d)
    chunk = max(1, 4_000_000 // n)  # bound memory: chunk x N indices at a time
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))  # [chunk, N]
        means[start:stop] = d[idx].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(d.mean()), float(low), float(high)


def _cell_correctness(trials: pd.DataFrame, labels: np.ndarray) -> np.ndarray | None:
    """Per-example correctness averaged over a cell's seeds, from each trial's val_logits.npy.

    Its mean equals the cell's mean seed accuracy, so the bootstrap's point estimate is the
    table's difference of means. Trials without logits (or with the wrong shape) are skipped."""
    rows = []
    for trial_dir in trials["trial_dir"].dropna():
        path = Path(trial_dir) / "val_logits.npy"
        if not path.is_file():
            continue
        logits = np.load(path, allow_pickle=False)
        if logits.ndim != 2 or logits.shape[0] != len(labels):
            continue
        rows.append(logits.argmax(axis=1) == labels)
    return np.mean(rows, axis=0) if rows else None


def bootstrap_vs_best(
    df: pd.DataFrame, summary: pd.DataFrame, labels: np.ndarray,
    n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """A copy of ``summary`` with each cell's bootstrap difference (cell - best) in validation
    accuracy and its 95% CI, over the validation examples. Cells (or a best cell) without
    ``val_logits.npy`` files keep NaN."""
    out = summary.copy()
    if summary.empty:
        return out
    done = completed(df)
    correct = {
        (s, t): _cell_correctness(done[(done[M.STRATEGY] == s) & (done[M.TEMPERATURE] == t)], labels)
        for s, t in zip(summary[M.STRATEGY], summary[M.TEMPERATURE])
    }
    winner = choose_winner(summary)
    best = correct[winner]
    if best is None:
        return out
    for row, s, t in zip(out.index, out[M.STRATEGY], out[M.TEMPERATURE]):
        if correct[(s, t)] is not None and (s, t) != winner:
            out.loc[row, [DIFF, CI_LOW, CI_HIGH]] = paired_bootstrap(
                best, correct[(s, t)], n_resamples=n_resamples, seed=seed)
    return out


# ---------------------------------------------------------------------------------------------
# Classification metrics from logits


def softmax(logits: Any) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)  # [N, C]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def f1_per_class(preds: Any, labels: Any) -> dict[int, float]:
    """F1 of every class that occurs in labels or predictions (as scikit-learn counts them)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    out = {}
    for c in np.union1d(labels, preds):
        tp = np.sum((preds == c) & (labels == c))
        fp = np.sum((preds == c) & (labels != c))
        fn = np.sum((preds != c) & (labels == c))
        out[int(c)] = float(2 * tp / (2 * tp + fp + fn))
    return out


def macro_f1(preds: Any, labels: Any) -> float:
    """Unweighted mean of per-class F1 (a class with no true positives scores 0)."""
    return float(np.mean(list(f1_per_class(preds, labels).values())))


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = ECE_BINS) -> float:
    """ECE: over ``n_bins`` equal-width confidence bins (lo, hi], the example-weighted mean of
    |accuracy - mean confidence|, confidence being the top softmax probability."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    conf = probs.max(axis=1)  # [N]
    correct = probs.argmax(axis=1) == labels  # [N]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], conf, side="left")  # conf in (e_k, e_k+1] -> k
    ece = 0.0
    for k in range(n_bins):
        mask = bins == k
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def classification_metrics(logits: Any, labels: Any, n_bins: int = ECE_BINS) -> dict[str, float]:
    """accuracy, macro-F1 and ECE of ``logits`` [N, C] against integer ``labels`` [N]."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise CheckpointError(f"logits of shape {logits.shape} do not match {labels.shape[0]} labels")
    probs = softmax(logits)
    preds = probs.argmax(axis=1)
    return {M.ACCURACY: float(np.mean(preds == labels)), M.MACRO_F1: macro_f1(preds, labels),
            M.ECE: expected_calibration_error(probs, labels, n_bins)}


def count_safetensors_params(model_dir: Path) -> int | None:
    """Parameters in a HF dir's ``*.safetensors``, from the JSON headers only (no tensor load)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    try:
        for path in files:
            with open(path, "rb") as f:
                size = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(size))
            total += sum(int(np.prod(v["shape"])) for k, v in header.items() if k != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # not a readable safetensors header: the count is left out, not guessed
    return total


# ---------------------------------------------------------------------------------------------
# Tables


def _fmt(value: Any, spec: str, missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return missing
    return format(value, spec)


def _fmt_int(value: Any, missing: str = "—") -> str:
    try:
        return missing if pd.isna(value) else str(int(value))
    except (TypeError, ValueError):
        return str(value)


def _fmt_acc(mean: Any, std: Any) -> str:
    return f"{_fmt(mean, '.4f')} ± {_fmt(std, '.4f')}"


def format_table(summary: pd.DataFrame, teacher: dict[str, Any] | None = None) -> str:
    """The study's table in markdown, one row per cell (best mean first), plus the teacher's
    row when ``teacher`` (keys ``accuracy`` and optionally ``params``) is given."""
    head = ("| strategy | T | train loss | val loss | val acc mean ± std | n | retained vs teacher "
            "| fidelity | params | p (Holm) | bootstrap CI |")
    lines = [head, "|" + "---|" * 11]
    winner = choose_winner(summary) if not summary.empty else None
    for r in summary.itertuples(index=False):
        row = r._asdict()
        best = (row[M.STRATEGY], row[M.TEMPERATURE]) == winner
        p = "best" if best else _fmt(row[P_HOLM], ".3g")
        ci = "—" if best or np.isnan(row[CI_LOW]) else f"[{row[CI_LOW]:+.4f}, {row[CI_HIGH]:+.4f}]"
        lines.append(
            f"| {row[M.STRATEGY]} | {row[M.TEMPERATURE]:g} | {_fmt(row[TRAIN_LOSS_MEAN], '.4f')} "
            f"| {_fmt(row[VAL_LOSS_MEAN], '.4f')} | {_fmt_acc(row[VAL_ACC_MEAN], row[VAL_ACC_STD])} "
            f"| {row[N]} | {_fmt(row[RETAINED], '.1%')} | {_fmt(row[FIDELITY_MEAN], '.3f')} "
            f"| {_fmt(row[M.PARAMS], ',.0f')} | {p} | {ci} |"
        )
    if teacher is not None:
        lines.append(
            f"| teacher | — | — | — | {_fmt(teacher.get(M.ACCURACY), '.4f')} | 1 | 100.0% | 1.000 "
            f"| {_fmt(teacher.get(M.PARAMS), ',.0f')} | — | — |"
        )
    return "\n".join(lines)


def significance_sentence(summary: pd.DataFrame, alpha: float = SIGNIFICANCE_LEVEL) -> str:
    """One honest sentence on what the Holm-adjusted Welch tests show."""
    if len(summary) < 2:
        return "Only one cell completed: there is nothing to compare it with."
    winner = choose_winner(summary)
    others = summary[[(s, t) != winner for s, t in zip(summary[M.STRATEGY], summary[M.TEMPERATURE])]]
    if others[P_HOLM].isna().all():
        return ("Significance was not tested: Welch's t-test needs at least 2 completed seeds "
                "in both cells compared.")
    worse = others[others[P_HOLM] < alpha]
    if worse.empty:
        return (f"No cell differs significantly from the best at alpha={alpha} after Holm "
                "correction (Welch's t-test over seeds): the ranking of the top cells may be noise.")
    names = ", ".join(f"{s} T={t:g}" for s, t in zip(worse[M.STRATEGY], worse[M.TEMPERATURE]))
    return (f"{len(worse)} of {len(summary) - 1} cells are significantly worse than the best at "
            f"alpha={alpha} after Holm correction (Welch's t-test over seeds): {names}. "
            "The others do not differ significantly from it.")


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _failed_table(df: pd.DataFrame) -> str:
    lines = ["| trial | strategy | T | seed | status | epochs | reason |", "|" + "---|" * 7]
    for r in not_completed(df).itertuples(index=False):
        row = r._asdict()
        epochs = f"{_fmt_int(row['epochs'])}/{_fmt_int(row['expected_epochs'], '?')}"
        lines.append(f"| {row[M.TRIAL_ID]} | {row[M.STRATEGY]} | {_fmt(row[M.TEMPERATURE], 'g')} "
                     f"| {_fmt_int(row[M.SEED])} | {row['status']} | {epochs} "
                     f"| {_md_escape(_reason(row))} |")
    return "\n".join(lines)


def _reason(row: dict[str, Any]) -> str:
    """Why a trial was not averaged: its exception, or how far it got."""
    if isinstance(row.get("error"), str) and row["error"]:
        return row["error"]
    reason = f"ran {_fmt_int(row['epochs'])} of {_fmt_int(row['expected_epochs'], '?')} epochs"
    status = row.get("tune_status")
    if isinstance(status, str) and status not in (COMPLETED, ERRORED):
        reason += f" (Tune status {status}: the sweep did not finish)"
    return reason


# ---------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg backend, imported only when plotting)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_val_accuracy(summary: pd.DataFrame, path: Path, teacher_accuracy: float | None = None) -> None:
    """Grouped bars: one group per strategy, one bar per temperature, error bars = std."""
    plt = _pyplot()
    strategies = list(dict.fromkeys(summary[M.STRATEGY]))
    temps = sorted(summary[M.TEMPERATURE].unique())
    width = 0.8 / max(len(temps), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(strategies)), 4))
    for j, t in enumerate(temps):
        cell = summary[summary[M.TEMPERATURE] == t].set_index(M.STRATEGY).reindex(strategies)
        x = np.arange(len(strategies)) + (j - (len(temps) - 1) / 2) * width
        ax.bar(x, cell[VAL_ACC_MEAN], width, yerr=cell[VAL_ACC_STD].fillna(0), capsize=3,
               label=f"T={t:g}")
    if teacher_accuracy is not None:
        ax.axhline(teacher_accuracy, color="k", linestyle="--", linewidth=1, label="teacher")
    low = np.nanmin((summary[VAL_ACC_MEAN] - summary[VAL_ACC_STD].fillna(0)).to_numpy())
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_xticks(np.arange(len(strategies)), strategies)
    ax.set_ylabel("validation accuracy (mean ± std over seeds)")
    ax.legend()
    _save(fig, path)


def plot_learning_curves(history: pd.DataFrame, path: Path) -> None:
    """Validation accuracy per epoch, one line per strategy (mean over seeds and temperatures)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    curves = history.dropna(subset=[M.EPOCH, M.VAL_ACCURACY]).groupby([M.STRATEGY, M.EPOCH])
    for strategy, curve in curves[M.VAL_ACCURACY].mean().groupby(level=0):
        ax.plot(curve.index.get_level_values(1), curve.to_numpy(), marker="o", label=strategy)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("completed trials, mean over seeds and temperatures")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if ax.lines:
        ax.legend()
    _save(fig, path)


def read_al_curve(path: str | Path) -> pd.DataFrame:
    """``al/curve.csv``: one line per round per acquisition. Raises CheckpointError when the
    file is missing or lacks a column."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing active-learning curve {path}")
    curve = pd.read_csv(path)
    missing = sorted({M.ACQUISITION, M.ROUND, M.LABELED_COUNT, M.VAL_ACCURACY} - set(curve.columns))
    if missing:
        raise CheckpointError(f"{path} lacks columns {missing} (has {list(curve.columns)})")
    return curve


def plot_active_learning(curve: pd.DataFrame | str | Path, path: Path) -> None:
    """Validation accuracy against labelled examples, one line per acquisition function.
    ``curve`` is the AL curve frame or the path of ``al/curve.csv``."""
    if not isinstance(curve, pd.DataFrame):
        curve = read_al_curve(curve)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for acquisition, g in curve.sort_values(M.LABELED_COUNT).groupby(M.ACQUISITION):
        ax.plot(g[M.LABELED_COUNT], g[M.VAL_ACCURACY], marker="o", label=acquisition)
    ax.set_xlabel("labelled examples")
    ax.set_ylabel("teacher validation accuracy")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# The report


def _optional_array(path: Path) -> np.ndarray | None:
    return np.load(path, allow_pickle=False) if path.is_file() else None


def _optional_logits(path: Path, labels: np.ndarray, labels_path: Path) -> np.ndarray | None:
    """Logits [N, C] matching ``labels`` [N], or None without the file. Raises CheckpointError
    naming both files when the shapes disagree."""
    logits = _optional_array(path)
    if logits is not None and (logits.ndim != 2 or len(logits) != len(labels)):
        raise CheckpointError(f"{path} has shape {logits.shape}, but {labels_path} holds "
                              f"{len(labels)} labels: they come from different runs or splits")
    return logits


def _optional_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def _test_section(run: RunDir, winner: tuple[str, float] | None) -> list[str]:
    """The winner's and the teacher's test metrics (chosen on validation, reported on test)."""
    out = ["## Test set (the winner was chosen on validation)", ""]
    labels = _optional_array(run.eval_labels("test"))
    if labels is None:
        return out + [f"Not available: {run.eval_labels('test')} is missing.", ""]
    student = _optional_logits(run.student_logits("test"), labels, run.eval_labels("test"))
    teacher = _optional_logits(run.teacher_logits("test"), labels, run.eval_labels("test"))
    if student is None and teacher is None:
        return out + [f"Not available: no {run.student_logits('test')} or teacher test logits.", ""]
    prov = _optional_json(run.student / "provenance.json") or {}
    exported = (prov.get(M.STRATEGY), prov.get(M.TEMPERATURE))
    if winner and None not in exported and (exported[0], float(exported[1])) != winner:
        out += [f"Note: the exported student is {prov.get(M.STRATEGY)} "
                f"T={prov.get(M.TEMPERATURE)}, not this report's winner {winner[0]} T={winner[1]:g}.", ""]
    out += ["| model | test accuracy | macro-F1 | ECE (15 bins) | agreement with teacher | params |",
            "|" + "---|" * 6]
    rows = [("student (winner)", student, count_safetensors_params(run.student)),
            ("teacher", teacher, count_safetensors_params(run.teacher))]
    for name, logits, params in rows:
        if logits is None:
            continue
        m = classification_metrics(logits, labels)
        agree = np.mean(logits.argmax(1) == teacher.argmax(1)) if teacher is not None else None
        out.append(f"| {name} | {m[M.ACCURACY]:.4f} | {m[M.MACRO_F1]:.4f} | {m[M.ECE]:.4f} "
                   f"| {_fmt(agree, '.4f')} | {_fmt(params, ',d')} |")
    names = _optional_json(run.labels / "label_names.json")
    if student is not None and isinstance(names, list):
        f1 = f1_per_class(student.argmax(1), labels)
        per = ", ".join(f"{names[c] if c < len(names) else c} {v:.3f}" for c, v in f1.items())
        out += ["", f"Winner's per-class F1 (test): {per}."]
    return out + [""]


def _al_section(run: RunDir) -> tuple[list[str], pd.DataFrame | None]:
    if not run.al_curve.is_file():
        return [], None
    try:
        curve = read_al_curve(run.al_curve)
    except CheckpointError as err:  # the AL curve is a side result: note it, keep the report
        return ["## Active learning", "", f"Skipped: {err}.", ""], None
    table = curve.pivot_table(index=M.LABELED_COUNT, columns=M.ACQUISITION, values=M.VAL_ACCURACY)
    lines = ["## Active learning (teacher validation accuracy by labelled examples)", "",
             "| labelled | " + " | ".join(table.columns) + " |", "|" + "---|" * (len(table.columns) + 1)]
    for count, row in table.iterrows():
        lines.append(f"| {count} | " + " | ".join(_fmt(v, ".4f") for v in row) + " |")
    return lines + ["", f"![active learning](plots/{PLOT_ACTIVE_LEARNING})", ""], curve


def _teacher_val(run: RunDir, labels: np.ndarray | None) -> dict[str, Any] | None:
    if labels is None:
        return None
    logits = _optional_logits(run.teacher_logits("validation"), labels, run.eval_labels("validation"))
    if logits is None:
        return None
    out: dict[str, Any] = classification_metrics(logits, labels)
    out[M.PARAMS] = count_safetensors_params(run.teacher)
    return out


def study_summary(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any] | None]:
    """(per-trial results, per-cell summary with significance and bootstrap, the teacher's
    validation metrics or None): everything the study's table needs, from disk."""
    run = RunDir(run_dir)
    df = load_results(run.root)
    labels_val = _optional_array(run.eval_labels("validation"))
    teacher = _teacher_val(run, labels_val)
    summary = summarize(df, teacher[M.ACCURACY] if teacher else None)
    if labels_val is not None:
        summary = bootstrap_vs_best(df, summary, labels_val)
    return df, summary, teacher


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md``, ``results.csv``, ``summary.csv`` and ``plots/*.png`` into the run
    directory from the files already there (no training, no Ray). Returns the report's path.
    Raises CheckpointError when the run has no sweep results."""
    run = RunDir(run_dir)
    df, summary, teacher = study_summary(run.root)
    labels_val = _optional_array(run.eval_labels("validation"))
    winner = choose_winner(summary) if not summary.empty else None
    atomic_write_text(run.results_csv, df.to_csv(index=False))
    atomic_write_text(run.summary_csv, summary.to_csv(index=False))
    lines = _header(run, df)
    lines += _study_section(summary, teacher, winner, labels_val)
    lines += _test_section(run, winner)
    lines += _failed_section(df)
    al_lines, curve = _al_section(run)
    lines += al_lines
    if not summary.empty:
        plot_val_accuracy(summary, run.plots / PLOT_VAL_ACCURACY, teacher[M.ACCURACY] if teacher else None)
        hist = load_history(run.root)
        plot_learning_curves(hist[hist[M.TRIAL_ID].isin(completed(df)[M.TRIAL_ID])],
                             run.plots / PLOT_LEARNING_CURVES)
    if curve is not None:
        plot_active_learning(curve, run.plots / PLOT_ACTIVE_LEARNING)
    atomic_write_text(run.report, "\n".join(lines) + "\n")
    return run.report


def _header(run: RunDir, df: pd.DataFrame) -> list[str]:
    name = _read_run_config(run.root).get("name", run.root.name)
    counts = df["status"].value_counts()
    return [f"# raydistill report: {name}", "", f"Run directory: `{run.root}`", "",
            f"Trials: {len(df)} ({counts.get(COMPLETED, 0)} completed, {counts.get(ERRORED, 0)} "
            f"in error, {counts.get(STOPPED_EARLY, 0)} stopped early). Only completed trials are "
            "averaged.", ""]


def _study_section(summary: pd.DataFrame, teacher: dict[str, Any] | None,
                   winner: tuple[str, float] | None, labels_val: np.ndarray | None) -> list[str]:
    out = ["## Students: strategy × temperature (validation, mean ± std over seeds)", ""]
    if summary.empty:
        return out + ["No trial completed: there is no table and no winner.", ""]
    out += [format_table(summary, teacher), ""]
    best = summary.iloc[0]
    out += [f"**Winner** (best mean validation accuracy over seeds): **{winner[0]}**, "
            f"T={winner[1]:g}, {_fmt_acc(best[VAL_ACC_MEAN], best[VAL_ACC_STD])} "
            f"over {best[N]} seeds, layers {best[M.LAYERS]}.", "",
            significance_sentence(summary), ""]
    if labels_val is None:
        out.append("Bootstrap: skipped (no labels/validation.npy).")
    else:
        out.append(f"Bootstrap CI: 95% paired bootstrap ({BOOTSTRAP_RESAMPLES} resamples of the "
                   f"{len(labels_val)} validation examples, seed {BOOTSTRAP_SEED}) of the accuracy "
                   "difference cell − best, per-example correctness averaged over seeds; an "
                   "interval containing 0 means no detectable difference. Cells without "
                   "val_logits.npy show —.")
    return out + ["", f"![validation accuracy](plots/{PLOT_VAL_ACCURACY})",
                  f"![learning curves](plots/{PLOT_LEARNING_CURVES})", ""]


def _failed_section(df: pd.DataFrame) -> list[str]:
    if not_completed(df).empty:
        return []
    return ["## Trials not averaged (error or stopped early)", "", _failed_table(df), ""]
