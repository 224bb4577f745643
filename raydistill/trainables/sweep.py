"""The student sweep: Ray Tune fans the trials (:mod:`raydistill.trainables.student_trial`)
out over layer strategy x temperature x seed, optionally after an Optuna phase that tunes alpha
and lr per strategy, and resumes an interrupted sweep from the trials' own files.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from ray import tune
from ray.tune.logger import TBXLoggerCallback
from ray.tune.search import BasicVariantGenerator

from raydistill.platform import metrics as M
from raydistill.platform.config import ExperimentConfig
from raydistill.platform.errors import CheckpointError, SweepInterrupted
from raydistill.platform.logs import log
from raydistill.platform.prepared import transfer_indices
from raydistill.platform.report import COMPLETED, load_results
from raydistill.platform.report.trials import read_error_line
from raydistill.platform.rundir import TUNE_EXPERIMENT, RunDir, TrialDir, atomic_write_json, load_array
from raydistill.platform.tracking import RUN_TAG, STAGE_TAG, mlflow_target
from raydistill.trainables.resources import Demand, preflight
from raydistill.trainables.student_trial import point_key, train_student


def shared_data(cfg: ExperimentConfig, run: RunDir, data, labeled: list[int],
                experiment: str = TUNE_EXPERIMENT) -> dict[str, Any]:
    """Everything every trial reads, put in the object store once by ``tune.with_parameters``."""
    pool = data.encoded["train"]
    mask = np.zeros(len(pool), dtype=bool)
    mask[np.asarray(labeled, dtype=np.int64)] = True
    return {
        "cfg": cfg.model_dump(mode="json"), "teacher_dir": str(run.teacher),
        "experiment_dir": str(run.experiment(experiment)), "pool": pool, "validation": data.encoded["validation"],
        "test": data.encoded["test"],
        "labeled_mask": mask, "pad_token_id": data.pad_token_id,
        "transfer": transfer_indices(len(pool), cfg.student.transfer_size, cfg.seed),  # sorted
        "teacher_pool_logits": load_array(run.teacher_logits("train")),
        "teacher_val_logits": load_array(run.teacher_logits("validation")),
    }


def _trainable(cfg: ExperimentConfig, shared: dict[str, Any]):
    resources = {"cpu": cfg.sweep.cpus_per_trial, "gpu": cfg.sweep.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(train_student, shared=shared), resources)


def grid_points(cfg: ExperimentConfig, tuned: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    """Every trial's config: strategy x temperature x seed, with alpha and lr from the config or,
    per strategy, from the Optuna phase."""
    tuned = tuned or {}
    return [
        {"strategy": strategy, "temperature": temperature, "seed": seed,
         "alpha": tuned.get(strategy, {}).get("alpha", cfg.student.alpha),
         "lr": tuned.get(strategy, {}).get("lr", cfg.student.lr)}
        for strategy in cfg.sweep.strategies for temperature in cfg.sweep.temperatures for seed in cfg.sweep.seeds
    ]


def _trial_dirname(trial) -> str:
    """Tune's own layout (name, trial id, index, date) with the point in words, e.g.
    ``train_student_81c18_00007_7_odd-T2-seed1_2026-12-02_00-44-18``."""
    index = int(trial.trial_id.rsplit("_", 1)[-1])
    return (f"{trial.trainable_name}_{trial.trial_id}_{index}_{point_key(trial.config)}_"
            f"{time.strftime('%Y-%m-%d_%H-%M-%S')}")


def preflight_sweep(cfg: ExperimentConfig) -> None:
    """Raise ResourceError when no node could run one sweep trial; warn when trials will wait.
    Tune runs trials as they fit, so only one has to."""
    s = cfg.sweep
    preflight("the student sweep", [
        Demand("CPU", s.cpus_per_trial, 1, f"sweep.cpus_per_trial = {s.cpus_per_trial:g}"),
        Demand("GPU", s.gpus_per_trial, 1, f"sweep.gpus_per_trial = {s.gpus_per_trial:g}"),
    ], all_at_once=False)


class _ProgressLine(tune.Callback):
    """One line per finished trial instead of Tune's tables."""

    def __init__(self, total: int, command: str = "sweep") -> None:
        self.total, self.done, self.started, self.command = total, 0, time.monotonic(), command

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        r = trial.last_result or {}
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        log.info(f"[{self.command}] {self.done}/{self.total} {_point(trial.config)}: "
                 f"val acc {r.get(M.VAL_ACCURACY, float('nan')):.4f} ({elapsed:.0f}s, "
                 f"about {eta / 60:.0f} min to go)")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        log.warning(f"[{self.command}] {_describe(trial)} failed ({_last_error_line(trial)}); Tune retries it "
                    f"from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        log.warning(f"[{self.command}] {self.done}/{self.total} {_describe(trial)} ERROR ({_last_error_line(trial)})")


def _point(c: dict[str, Any]) -> str:
    depth = f" k={c['num_layers']}" if c.get("num_layers") is not None else ""
    return f"{c.get('strategy')}{depth} T={c.get('temperature')} seed={c.get('seed')}"


def _describe(trial) -> str:
    return f"{_point(trial.config)} (trial {trial.trial_id})"


def _last_error_line(trial) -> str:
    path = getattr(trial, "error_file", None)
    return (read_error_line(Path(path)) if path else None) or "no error file"


class _NoTensorBoard(TBXLoggerCallback):
    """Writes nothing; its presence keeps Tune from adding its own TensorBoard logger
    (``tracking.tensorboard: false``) while the CSV and JSON loggers the report reads stay."""

    def log_trial_start(self, trial) -> None:
        pass

    def log_trial_result(self, iteration, trial, result) -> None:
        pass

    def log_trial_end(self, trial, failed: bool = False) -> None:
        pass


def _run_config(cfg: ExperimentConfig, run: RunDir, total: int, name: str = TUNE_EXPERIMENT) -> tune.RunConfig:
    """Tune's run config. Tracking goes through Ray's own callbacks: each trial's TensorBoard
    events in its trial directory, and with ``tracking.mlflow_uri`` one MLflow run per trial
    (its point as params, every epoch's metrics), tagged with the run and the phase."""
    progress = _ProgressLine(total, "sweep" if name == TUNE_EXPERIMENT else name)
    callbacks = [progress, TBXLoggerCallback() if cfg.tracking.tensorboard else _NoTensorBoard()]
    if (target := mlflow_target(cfg, run.root)) is not None:  # ConfigError when mlflow is missing
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri, experiment = target
        callbacks.append(MLflowLoggerCallback(
            tracking_uri=uri, experiment_name=experiment, save_artifact=False,
            tags={RUN_TAG: run.root.name, STAGE_TAG: "sweep" if name == TUNE_EXPERIMENT else name,
                  "raydistill.run_dir": str(run.root)}))
    return tune.RunConfig(
        name=name, storage_path=str(run.tune), verbose=0, callbacks=callbacks,
        checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.sweep.checkpoints_to_keep),
        failure_config=tune.FailureConfig(max_failures=cfg.sweep.max_failures),
    )


def optuna_phase(cfg: ExperimentConfig, run: RunDir, shared: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Tune alpha and lr per strategy on one seed (OptunaSearch + ASHA; Optuna takes no grid axes)."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    tuned = {}
    for strategy in cfg.sweep.strategies:
        space = {"strategy": strategy, "temperature": tune.choice(list(cfg.sweep.temperatures)),
                 "seed": cfg.sweep.seeds[0], "alpha": tune.uniform(*cfg.sweep.optuna_alpha), "lr": tune.loguniform(*cfg.sweep.optuna_lr)}
        tuner = tune.Tuner(
            _trainable(cfg, shared), param_space=space,
            tune_config=tune.TuneConfig(
                metric=M.VAL_ACCURACY, mode="max", num_samples=cfg.sweep.optuna_samples,
                search_alg=OptunaSearch(seed=cfg.seed),
                scheduler=ASHAScheduler(max_t=cfg.student.epochs, grace_period=1, time_attr=M.EPOCH),
                max_concurrent_trials=cfg.sweep.max_concurrent_trials, reuse_actors=True),
            run_config=_run_config(cfg, run, cfg.sweep.optuna_samples, name=f"optuna-{strategy}"),
        )
        best = tuner.fit().get_best_result(metric=M.VAL_ACCURACY, mode="max").config
        tuned[strategy] = {"alpha": best["alpha"], "lr": best["lr"]}
        log.info(f"[sweep] optuna {strategy}: alpha={best['alpha']:.3f} lr={best['lr']:.2e}")
    atomic_write_json(run.optuna_best, tuned)
    return tuned


def run_sweep(cfg: ExperimentConfig, run: RunDir, data, labeled: list[int], resume: bool = False) -> int:
    """Run the sweep's trials under ``<run>/tune/students``; returns how many ran.

    With ``resume``, only the trials that have not finished run again, each from its last
    checkpoint when it has one (``RunDir.tune_resume``). Files are data, never code: resuming reads the
    trials' JSON results and safetensors checkpoints, never Tune's pickled experiment state
    (``tuner.pkl``, ``experiment_state-*.json``), which ``Tuner.restore`` would unpickle: a
    crafted one in a copied run directory would run its code. Raises SweepInterrupted when Tune
    returns with trials unfinished (Ctrl-C)."""
    preflight_sweep(cfg)
    # Keeping few checkpoints forces frequent experiment snapshots; that is wanted, not a warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    shared = shared_data(cfg, run, data, labeled)
    tuned_file = run.optuna_best
    if cfg.sweep.search == "optuna" and resume and tuned_file.is_file():
        tuned = json.loads(tuned_file.read_text(encoding="utf-8"))
    else:
        tuned = optuna_phase(cfg, run, shared) if cfg.sweep.search == "optuna" else None
    return run_trials(cfg, run, shared, grid_points(cfg, tuned), TUNE_EXPERIMENT, resume)


def run_trials(cfg: ExperimentConfig, run: RunDir, shared: dict[str, Any], points: list[dict[str, Any]],
               experiment: str, resume: bool, command: str = "sweep") -> int:
    """Run ``points`` as Tune trials of ``experiment`` (one trial a point); returns how many ran.
    With ``resume``, only unfinished points run, each from its last checkpoint when it has one.
    ``command`` names the CLI command that resumes it in the message of SweepInterrupted."""
    exp = run.experiment(experiment)
    if resume and exp.exists():
        points, shared["resume"] = _points_to_resume(cfg, run, points, experiment)
        if not points:
            log.info(f"[{command}] every trial has finished: nothing to resume")
            return 0
    # Every point overrides every axis, so each of the len(points) samples is exactly one trial;
    # the axes only tell Tune the keys and their values.
    axes = {key: tune.grid_search(sorted({p[key] for p in points})) for key in points[0]}
    tuner = tune.Tuner(
        _trainable(cfg, shared), param_space=axes,
        tune_config=tune.TuneConfig(search_alg=BasicVariantGenerator(points_to_evaluate=points),
                                    num_samples=len(points), max_concurrent_trials=cfg.sweep.max_concurrent_trials,
                                    reuse_actors=True, trial_dirname_creator=_trial_dirname),
        run_config=_run_config(cfg, run, len(points), name=experiment),
    )
    started = time.monotonic()
    grid = tuner.fit()
    minutes = (time.monotonic() - started) / 60
    finished = sum(1 for r in grid if r.error is None and (r.metrics or {}).get(M.EPOCH) == cfg.student.epochs)
    errors = sum(1 for r in grid if r.error is not None)
    log.info(f"[sweep] {finished} of {len(grid)} trials finished ({errors} in error) in {minutes * 60:.0f}s "
             f"({finished / max(minutes, 1e-9):.1f} trials/min); curves of the teacher and every trial: "
             f"tensorboard --logdir {run.root}")
    if finished + errors < len(grid):  # Tune returns normally on Ctrl-C, with trials unfinished
        raise SweepInterrupted(
            f"the {command} stopped with {len(grid) - finished - errors} trials unfinished; "
            f"continue it with: raydistill {command} {run.root} --resume")
    shutil.rmtree(run.resume_dir(experiment), ignore_errors=True)
    return len(grid)


def _points_to_resume(cfg: ExperimentConfig, run: RunDir, points: list[dict[str, Any]],
                      experiment: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The points without a finished trial, and, by point, the staged last checkpoint of its
    unfinished trial. Unfinished trial directories are removed once their checkpoint is staged
    (in ``RunDir.tune_resume``), so each (strategy, T, seed) ends with exactly one directory."""
    try:
        df = load_results(run.experiment(experiment), expected_epochs=cfg.student.epochs)
    except CheckpointError:  # the sweep never got as far as a trial directory
        return points, {}
    done = {point_key(r) for r in df.to_dict("records") if r["status"] == COMPLETED}
    staged_dir = run.resume_dir(experiment)
    staged = {p.name: str(p) for p in staged_dir.iterdir()} if staged_dir.is_dir() else {}
    for row in df[df["trial_dir"].notna()].sort_values("finished_at", na_position="first").to_dict("records"):
        key, trial_dir = point_key(row), Path(row["trial_dir"])
        if key in done or not trial_dir.is_dir():
            continue
        checkpoints = TrialDir(trial_dir).checkpoints()
        if checkpoints:  # the newest attempt's last checkpoint wins (rows are oldest first)
            target = staged_dir / key
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(checkpoints[-1]), target)
            staged[key] = str(target)
        shutil.rmtree(trial_dir)
    todo = [p for p in points if point_key(p) not in done]
    staged = {key: staged[key] for key in map(point_key, todo) if key in staged}
    log.info(f"[sweep] resuming: {len(points) - len(todo)} of {len(points)} trials finished, {len(todo)} to run "
             f"({len(staged)} from their last checkpoint)")
    return todo, staged
