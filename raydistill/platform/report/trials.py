"""Tune's trial files on disk -> one DataFrame row per trial.

The report reads what Tune wrote, never through Ray (``platform/`` runs where Ray is not
installed). What Tune 2.60 puts in an experiment directory (checked against a real run):

- one subdirectory per trial, ``<trainable>_<id>_<n>_<tag>_<date>``, holding ``params.json``
  (the trial's config), ``result.json`` (JSON lines, one per ``tune.report``, plus Tune's keys
  ``done``, ``training_iteration``, ``trial_id``, ``timestamp``, ``date``, ``config``, ...),
  ``progress.csv``, ``params.pkl`` and whatever the trial wrote there (``val_logits.npy``, and
  ``test_logits.npy`` for the seeds of the winning cell);
- ``done`` is true only on the last line of a trial whose function returned -- and also on the
  last line of a trial a ``stop`` criterion ended early (Tune calls both TERMINATED), so
  "complete" is decided by counting epochs against the configured number;
- a trial that raised has ``error.txt`` (the traceback) and ``error.pkl`` (never unpickled
  here), and its last line has ``done: false``;
- ``experiment_state-<session>.json`` is plain JSON ``{"trial_data": [[trial, meta], ...]}``,
  each element a JSON string: ``trial`` holds ``status`` (PENDING / RUNNING / TERMINATED /
  ERROR), ``trial_id``, ``relative_logdir`` and ``config``; ``meta`` holds ``error_filename``.
  Tune rewrites it periodically, so it can lag the trial files; the newest one is read.

A second ``raydistill sweep RUN`` without ``--resume`` writes a second set of trial directories
into the same experiment: a (strategy, temperature, seed) then appears twice. The newest
(``timestamp`` of its last result line, else the date in its directory name) is kept; the others
get status DUPLICATE and are never averaged.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from raydistill.platform import metrics as M
from raydistill.platform.errors import CheckpointError
from raydistill.platform.report.run_files import read_run_config
from raydistill.platform.rundir import TUNE_EXPERIMENT_STATE, RunDir, TrialDir

# Trial status in the results frame. Only COMPLETED trials are averaged.
COMPLETED = "TERMINATED"
ERRORED = "ERROR"
STOPPED_EARLY = "STOPPED_EARLY"
DUPLICATE = "DUPLICATE"  # an older run of a (strategy, temperature, seed) that ran again

DUPLICATE_OF = "duplicate_of"  # results column: the trial_id kept in a duplicate's place

_TRIAL_ID_RE = re.compile(r"_([0-9a-f]{5}_\d{5})_\d+_")
_DATE_RE = re.compile(r"(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})")
_CELL_SEED = [M.STRATEGY, M.TEMPERATURE, M.SEED]

@dataclass
class _Trial:
    """One trial as found on disk."""

    name: str
    trial_dir: Path | None
    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    error_time: float | None = None  # error.txt's modification time (whole seconds, like results)
    tune_status: str | None = None
    trial_id: str | None = None


def find_experiment(path: str | Path) -> Path:
    """The Tune experiment directory for a run directory (or an experiment directory itself).

    Raises CheckpointError when there is none or it holds no trials."""
    path = Path(path).expanduser().resolve()
    candidates = [RunDir(path).tune_experiment, path]
    for exp in candidates:
        if exp.is_dir() and (_trial_dirs(exp) or list(exp.glob(TUNE_EXPERIMENT_STATE))):
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
        if d.is_dir() and (TrialDir(d).params.is_file() or TrialDir(d).result.is_file())
    )


def _read_state(exp: Path) -> dict[str, dict[str, Any]]:
    """Tune's newest experiment state, by trial directory name: status, trial_id, config."""
    # Newest by the session timestamp in the name: a restored run rewrites the old file too,
    # so modification times do not tell which one is current.
    files = sorted(exp.glob(TUNE_EXPERIMENT_STATE), key=lambda p: p.name)
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


def read_error_line(path: Path) -> str | None:
    """The exception line of a Tune error file (its last non-empty line), or None without one."""
    if not path.is_file():
        return None
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return (lines[-1] if lines else "error.txt is empty")[:300]


_OCCURRED_RE = re.compile(r"occurred at (\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})")


def _error_time(path: Path) -> int | None:
    """When the trial's last recorded failure happened (seconds since the epoch): the newest
    ``Failure # n (occurred at <local time>)`` header Tune writes into error.txt. Not the
    file's mtime: Tune rewrites every trial file when it syncs the experiment at the end."""
    if not path.is_file():
        return None
    stamps = _OCCURRED_RE.findall(path.read_text(encoding="utf-8", errors="replace"))
    if not stamps:
        return int(path.stat().st_mtime)
    return int(time.mktime(time.strptime(max(stamps), "%Y-%m-%d_%H-%M-%S")))


def _read_trials(exp: Path) -> list[_Trial]:
    state = _read_state(exp)
    trials = []
    for d in _trial_dirs(exp):
        info = state.pop(d.name, {})
        files = TrialDir(d)
        params = files.params
        try:
            config = json.loads(params.read_text(encoding="utf-8")) if params.is_file() else {}
        except ValueError:
            config = {}
        error = files.error
        trials.append(_Trial(d.name, d, config or info.get("config", {}), _read_rows(files.result),
                             read_error_line(error), _error_time(error),
                             info.get("status"), info.get("trial_id")))
    for name, info in state.items():  # listed by Tune but never started (no directory yet)
        trials.append(_Trial(name, None, info["config"], tune_status=info["status"],
                             trial_id=info["trial_id"]))
    return trials


def _epochs_done(rows: list[dict[str, Any]]) -> int:
    epochs = {r[M.EPOCH] for r in rows if r.get(M.EPOCH) is not None}
    return len(epochs) if epochs else len(rows)


def _status(trial: _Trial, epochs: int, expected: int | None) -> str:
    # Tune 2.60 does not always write a final ``done: true`` line (not with reuse_actors), so a
    # trial is complete when it reported every configured epoch and did not error. A trial's
    # status is its last attempt's: Tune retries a trial whose node died in the same directory
    # and leaves the first attempt's error.txt there, so an error older than the last result
    # belongs to an attempt that a later one superseded.
    done = bool(trial.rows) and trial.rows[-1].get(M.DONE) is True
    superseded = (trial.error_time is not None and bool(trial.rows)
                  and float(trial.rows[-1].get("timestamp") or 0) > trial.error_time)
    failed = trial.error is not None and not superseded
    if (trial.tune_status == ERRORED and not superseded) or (failed and not done):
        return ERRORED
    if trial.rows and (epochs >= expected if expected is not None else done):
        return COMPLETED
    return STOPPED_EARLY


def _run_root(path: Path, exp: Path) -> Path | None:
    if exp == RunDir(path).tune_experiment:
        return RunDir(path).root
    return exp.parent.parent if exp.parent.name == "tune" else None


def _configured_epochs(root: Path | None) -> int | None:
    """``student.epochs`` of the run's config, defaults applied (config.yaml holds only what was
    set); None without a readable config."""
    from raydistill.platform.config import config_from_dict
    from raydistill.platform.errors import ConfigError

    tree = read_run_config(root)
    if not tree:
        return None
    try:
        return config_from_dict(tree).student.epochs
    except ConfigError:
        return None


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
    depth = {M.NUM_LAYERS: cfg[M.NUM_LAYERS]} if M.NUM_LAYERS in cfg else {}  # only the frontier's trials
    return {
        M.TRIAL_ID: trial_id,
        **depth,
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
        "finished_at": _finished_at(trial),
    }


def load_results(run_dir: str | Path, expected_epochs: int | None = None) -> pd.DataFrame:
    """One row per trial of the run's student sweep, read from Tune's files on disk.

    ``run_dir`` is a run directory (or a Tune experiment directory). ``status`` is TERMINATED
    (all configured epochs, finished), ERROR (the trainable raised) or STOPPED_EARLY (fewer
    epochs than configured, or never finished) or DUPLICATE (an older trial of a (strategy,
    temperature, seed) that ran again; ``duplicate_of`` names the trial kept). The configured epoch count is the trial's
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
    df = _mark_duplicates(pd.DataFrame([_trial_record(t, expected_epochs) for t in trials]))
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


def _finished_at(trial: _Trial) -> str:
    """A sortable time for "newest": the last result line's ``timestamp``, else the date in
    the directory name (Tune embeds it), else empty (a trial that never started)."""
    stamp = _last(trial.rows, "timestamp")
    if isinstance(stamp, (int, float)):
        return f"{float(stamp):020.3f}"
    match = _DATE_RE.search(trial.name)
    if match:
        parsed = pd.to_datetime(match.group(1), format="%Y-%m-%d_%H-%M-%S", errors="coerce")
        if not pd.isna(parsed):
            return f"{parsed.timestamp():020.3f}"
    return ""


def _mark_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Status DUPLICATE for every trial directory of a (strategy, temperature, seed) but the
    newest, with ``duplicate_of`` naming the one kept. Trials Tune listed but never started
    (no directory) are left alone: they are not averaged anyway."""
    df = df.assign(**{DUPLICATE_OF: None})
    ran = df[df["trial_dir"].notna()]
    keys = _CELL_SEED + ([M.NUM_LAYERS] if M.NUM_LAYERS in df else [])
    for _, group in ran.groupby(keys, dropna=False):
        if len(group) < 2:
            continue
        newest = group.sort_values(["finished_at", "trial_dir"]).index[-1]
        older = group.index.drop(newest)
        df.loc[older, "status"] = DUPLICATE
        df.loc[older, DUPLICATE_OF] = df.at[newest, M.TRIAL_ID]
    return df


def completed(df: pd.DataFrame) -> pd.DataFrame:
    """The trials that ran every configured epoch: the only ones averaged."""
    return df[df["status"] == COMPLETED]


def not_completed(df: pd.DataFrame) -> pd.DataFrame:
    """ERROR and STOPPED_EARLY trials: listed in the report, never averaged."""
    return df[df["status"].isin([ERRORED, STOPPED_EARLY])]


def duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Older runs of a (strategy, temperature, seed): listed in the report, never averaged."""
    return df[df["status"] == DUPLICATE]
