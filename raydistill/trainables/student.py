"""The student stage: a Ray Tune sweep of distilled students across layer strategies x
temperatures x seeds, and the export of the winner.

Each trial builds its own k-layer student from the teacher directory (never a shared object)
and distils it with the KD loss: cross-entropy on the examples the active learner paid for,
KL to the teacher's soft labels on the whole pool. With ``beta = 0`` the teacher's pool logits
come from the per-run cache (shared through the object store), so no trial runs the teacher.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune
from ray.tune.logger import TBXLoggerCallback
from ray.tune.search import BasicVariantGenerator
from transformers import get_linear_schedule_with_warmup

from raydistill.platform import metrics as M
from raydistill.platform.config import ExperimentConfig
from raydistill.platform.errors import CheckpointError, RaydistillError
from raydistill.platform.fastpath import (
    attn_implementation,
    autocast_context,
    loader_kwargs,
    make_optimizer,
    maybe_compile,
    restore_optimizer,
    select_device,
)
from raydistill.platform.layers import build_student, hidden_layer_map
from raydistill.platform.logs import log
from raydistill.platform.losses import kd_loss
from raydistill.platform.models import (
    count_parameters,
    eval_batch_size,
    load_classifier,
    model_inputs,
    predict_logits,
    save_classifier,
    set_seed,
)
from raydistill.platform.prepared import transfer_indices
from raydistill.platform.report import COMPLETED, choose_winner, load_results, summarize
from raydistill.platform.report.trials import read_error_line
from raydistill.platform.rundir import RunDir, atomic_write_json, load_array, save_array
from raydistill.platform.text import Encoded, make_loader
from raydistill.platform.tracking import RUN_TAG, STAGE_TAG, mlflow_target
from raydistill.trainables.inference import models_split_logits
from raydistill.trainables import failures
from raydistill.trainables.resources import Demand, preflight

MODEL_DIR = "model"
STATE_FILE = "state.json"
# What a trial resumed mid-way needs to continue as if never stopped: AdamW's moments (tensors
# only, read back with torch.load(weights_only=True), which unpickles no code) and the torch
# RNG (dropout). The data order is seeded per epoch by the loader.
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "torch_rng.npy"
RESUME_DIR = "resume"  # under <run>/tune: last checkpoints of unfinished trials, for `--resume`
OPTUNA_BEST = "optuna_best.json"  # under <run>/tune: alpha and lr per strategy, for `--resume`
VAL_LOGITS = "val_logits.npy"
TEST_LOGITS = "test_logits.npy"


class SweepInterrupted(RaydistillError):
    """Tune returned before every trial finished (Ctrl-C, or the driver was told to stop)."""


def _device(cfg: ExperimentConfig) -> torch.device:
    """CUDA for a trial with a GPU share, unless torch sees none (then the CPU, whatever Ray gave)."""
    return select_device(cfg.sweep.gpus_per_trial > 0)


def _distil_epoch(student, teacher, shared: dict[str, Any], trial: dict[str, Any], optimizer,
                  scheduler, epoch: int, device) -> dict[str, float]:
    """One pass over the pool; returns the mean of each loss term."""
    cfg: ExperimentConfig = shared["cfg_obj"]
    perf = cfg.performance
    pool: Encoded = shared["pool"]
    labeled = torch.as_tensor(shared["labeled_mask"])
    cached = None if teacher is not None else torch.as_tensor(shared["teacher_pool_logits"])
    loader = make_loader(pool, cfg.student.batch_size, indices=shared["transfer"], shuffle=True,
                         seed=trial["seed"] * 1000 + epoch, pad_token_id=shared["pad_token_id"],
                         **loader_kwargs(device, perf))
    beta, sums, count = cfg.student.beta, {}, 0
    student.train()
    for batch in loader:
        inputs = model_inputs(batch, device, perf)
        index = batch["index"]
        with autocast_context(device, perf):
            out = student(**inputs, output_hidden_states=beta > 0)
            if teacher is None:
                t_logits, t_hidden = cached[index].to(device), None
            else:
                with torch.inference_mode():
                    t_out = teacher(**inputs, output_hidden_states=beta > 0)
                t_logits = t_out.logits.clone()
                t_hidden = [h.clone() for h in t_out.hidden_states] if beta > 0 else None
            loss = kd_loss(out.logits.float(), t_logits.float(), batch["labels"].to(device),
                           labeled[index].to(device), trial["temperature"], trial["alpha"], beta,
                           out.hidden_states if beta > 0 else None, t_hidden,
                           shared["layer_map"][trial["strategy"]] if beta > 0 else None,
                           inputs["attention_mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        n = len(index)
        for key, value in {M.TRAIN_LOSS: float(loss.total.detach()), **loss.as_metrics()}.items():
            sums[key] = sums.get(key, 0.0) + value * n
        count += n
    return {k: v / max(count, 1) for k, v in sums.items()}


def _logits(student, split: Encoded, shared: dict[str, Any], device) -> torch.Tensor:
    perf = shared["cfg_obj"].performance
    loader = make_loader(split, eval_batch_size(shared["cfg_obj"].student.batch_size), pad_token_id=shared["pad_token_id"],
                         **loader_kwargs(device, perf))
    return predict_logits(student, loader, device, perf)


def _validate(student, shared: dict[str, Any], device) -> tuple[dict[str, float], np.ndarray]:
    val: Encoded = shared["validation"]
    logits = _logits(student, val, shared, device)
    labels = torch.tensor(val.labels)  # a copy: the shared arrays are read-only
    predictions = logits.argmax(-1)
    teacher_predictions = torch.as_tensor(shared["teacher_val_logits"]).argmax(-1)
    return {
        M.VAL_LOSS: torch.nn.functional.cross_entropy(logits, labels).item(),
        M.VAL_ACCURACY: (predictions == labels).float().mean().item(),
        M.FIDELITY: (predictions == teacher_predictions).float().mean().item(),
    }, logits.numpy()


def train_student(trial: dict[str, Any], shared: dict[str, Any]) -> None:
    """Tune function trainable: build the trial's student, distil it, report every epoch.

    A deterministic error (one of raydistill's own) is recorded in the trial directory; Tune's
    retry of that trial raises it again at once instead of repeating the work."""
    trial_dir = tune.get_context().get_trial_dir()
    if (fatal := failures.recorded(trial_dir)) is not None:
        raise fatal
    with failures.recording(trial_dir):
        _distil(trial, shared)


def _distil(trial: dict[str, Any], shared: dict[str, Any]) -> None:
    cfg = ExperimentConfig.model_validate(shared["cfg"])
    shared = {**shared, "cfg_obj": cfg}
    # The seed fixes dropout and every other draw, whichever (reused) actor runs the trial; the
    # data order is seeded by the loader. Same (strategy, T, seed): same validation logits.
    set_seed(trial["seed"])
    torch.set_num_threads(max(1, int(cfg.sweep.cpus_per_trial)))
    device, perf = _device(cfg), cfg.performance
    attention = attn_implementation(perf)
    teacher = load_classifier(shared["teacher_dir"], attention)
    # The student's config is the teacher's, attention implementation included.
    student, provenance = build_student(teacher, trial["strategy"], cfg.student.num_layers,
                                        cfg.sweep.custom_layers, seed=trial["seed"])
    teacher = maybe_compile(teacher.to(device).eval(), perf) if cfg.student.beta > 0 else None  # beta = 0: cache only
    start_epoch, resumed, history = 0, {}, []
    checkpoint = tune.get_checkpoint()  # Tune's own retry of this trial (a lost worker)
    staged = shared.get("resume", {}).get(_point_key(trial))  # `sweep --resume` after a stop
    if checkpoint is not None or staged:
        with (checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext(staged)) as directory:
            student = load_classifier(Path(directory) / MODEL_DIR, attention)
            state = json.loads((Path(directory) / STATE_FILE).read_text())
            start_epoch, history = state["epoch"], state.get("history", [])
            resumed = _read_resume_state(Path(directory))
        if checkpoint is None:
            for metrics in history:  # a new trial directory: carry the earlier epochs' rows over
                tune.report(metrics)
    student = student.to(device)
    if cfg.student.freeze_embeddings:
        student.base_model.embeddings.requires_grad_(False)
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = make_optimizer(trainable, trial["lr"], cfg.student.weight_decay, device, perf)
    if "optimizer" in resumed:
        restore_optimizer(optimizer, resumed["optimizer"])
    if "rng" in resumed:
        torch.set_rng_state(resumed["rng"])
    steps = cfg.student.epochs * -(-len(shared["transfer"]) // cfg.student.batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.student.warmup_ratio * steps), steps)
    with warnings.catch_warnings():  # stepping before optimizer.step() is the point here
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        for _ in range(start_epoch * (steps // cfg.student.epochs)):
            scheduler.step()  # resume the schedule where the checkpoint left it
    fixed = {M.STRATEGY: trial["strategy"], M.LAYERS: provenance.teacher_layers,
             M.PARAMS: count_parameters(student), M.TEMPERATURE: trial["temperature"], M.SEED: trial["seed"]}
    fast = maybe_compile(student, perf)  # runs the passes; ``student`` (same weights) is saved
    for epoch in range(start_epoch, cfg.student.epochs):
        train_metrics = _distil_epoch(fast, teacher, shared, trial, optimizer, scheduler, epoch, device)
        last = epoch + 1 == cfg.student.epochs
        val_metrics = {}
        if last or cfg.student.validate_every_epoch:
            val_metrics, val_logits = _validate(fast, shared, device)
        if last:
            trial_dir = Path(shared["experiment_dir"]) / Path(tune.get_context().get_trial_dir()).name
            save_array(trial_dir / VAL_LOGITS, val_logits.astype(np.float32))
            # Every trial's test logits: the report re-tests the validation verdicts on test
            # examples no choice has seen (the confirmation), not only the winner's.
            save_array(trial_dir / TEST_LOGITS, _logits(fast, shared["test"], shared, device).numpy().astype(np.float32))
        metrics = {**train_metrics, **val_metrics, **fixed, M.EPOCH: epoch + 1}
        history.append(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            save_classifier(student, Path(tmp) / MODEL_DIR, extra={"provenance.json": provenance.to_dict()})
            atomic_write_json(Path(tmp) / STATE_FILE, {"epoch": epoch + 1, "history": history})
            torch.save(optimizer.state_dict(), Path(tmp) / OPTIMIZER_FILE)
            save_array(Path(tmp) / RNG_FILE, torch.get_rng_state().numpy())
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def _read_resume_state(directory: Path) -> dict[str, Any]:
    """The optimizer state and RNG of a mid-trial checkpoint (absent in older checkpoints)."""
    out: dict[str, Any] = {}
    if (directory / OPTIMIZER_FILE).is_file():
        out["optimizer"] = torch.load(directory / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    if (directory / RNG_FILE).is_file():
        out["rng"] = torch.from_numpy(load_array(directory / RNG_FILE))
    return out


def _shared_data(cfg: ExperimentConfig, run: RunDir, data, labeled: list[int]) -> dict[str, Any]:
    """Everything every trial reads, put in the object store once by ``tune.with_parameters``."""
    pool = data.encoded["train"]
    mask = np.zeros(len(pool), dtype=bool)
    mask[np.asarray(labeled, dtype=np.int64)] = True
    n = load_classifier(run.teacher).config.num_hidden_layers
    return {
        "cfg": cfg.model_dump(mode="json"), "teacher_dir": str(run.teacher),
        "experiment_dir": str(run.tune_experiment), "pool": pool, "validation": data.encoded["validation"],
        "test": data.encoded["test"],
        "labeled_mask": mask, "pad_token_id": data.pad_token_id,
        "transfer": transfer_indices(len(pool), cfg.student.transfer_size, cfg.seed),  # sorted
        "teacher_pool_logits": load_array(run.teacher_logits("train")),
        "teacher_val_logits": load_array(run.teacher_logits("validation")),
        "layer_map": {s: hidden_layer_map(s, n, cfg.student.num_layers, cfg.sweep.custom_layers)
                      for s in cfg.sweep.strategies},
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
    return (f"{trial.trainable_name}_{trial.trial_id}_{index}_{_point_key(trial.config)}_"
            f"{time.strftime('%Y-%m-%d_%H-%M-%S')}")


def _point_key(point: dict[str, Any]) -> str:
    return f"{point['strategy']}-T{float(point['temperature']):g}-seed{int(point['seed'])}"


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

    def __init__(self, total: int) -> None:
        self.total, self.done, self.started = total, 0, time.monotonic()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        r = trial.last_result or {}
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        log.info(f"[sweep] {self.done}/{self.total} {r.get(M.STRATEGY, trial.config.get('strategy'))} "
                 f"T={trial.config.get('temperature')} seed={trial.config.get('seed')}: "
                 f"val acc {r.get(M.VAL_ACCURACY, float('nan')):.4f} ({elapsed:.0f}s, "
                 f"about {eta / 60:.0f} min to go)")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        log.warning(f"[sweep] {_describe(trial)} failed ({_last_error_line(trial)}); Tune retries it "
                    f"from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        log.warning(f"[sweep] {self.done}/{self.total} {_describe(trial)} ERROR ({_last_error_line(trial)})")


def _describe(trial) -> str:
    c = trial.config
    return f"{c.get('strategy')} T={c.get('temperature')} seed={c.get('seed')} (trial {trial.trial_id})"


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


def _run_config(cfg: ExperimentConfig, run: RunDir, total: int, name: str = "students") -> tune.RunConfig:
    """Tune's run config. Tracking goes through Ray's own callbacks: each trial's TensorBoard
    events in its trial directory, and with ``tracking.mlflow_uri`` one MLflow run per trial
    (its point as params, every epoch's metrics), tagged with the run and the phase."""
    callbacks = [_ProgressLine(total), TBXLoggerCallback() if cfg.tracking.tensorboard else _NoTensorBoard()]
    if (target := mlflow_target(cfg, run.root)) is not None:  # ConfigError when mlflow is missing
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri, experiment = target
        callbacks.append(MLflowLoggerCallback(
            tracking_uri=uri, experiment_name=experiment, save_artifact=False,
            tags={RUN_TAG: run.root.name, STAGE_TAG: "sweep" if name == "students" else name,
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
                 "seed": cfg.sweep.seeds[0], "alpha": tune.uniform(0.1, 0.9), "lr": tune.loguniform(1e-4, 1e-2)}
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
    atomic_write_json(run.tune / OPTUNA_BEST, tuned)
    return tuned


def run_sweep(cfg: ExperimentConfig, run: RunDir, data, labeled: list[int], resume: bool = False) -> int:
    """Run the sweep's trials under ``<run>/tune/students``; returns how many ran.

    With ``resume``, only the trials that have not finished run again, each from its last
    checkpoint when it has one (``RESUME_DIR``). Files are data, never code: resuming reads the
    trials' JSON results and safetensors checkpoints, never Tune's pickled experiment state
    (``tuner.pkl``, ``experiment_state-*.json``), which ``Tuner.restore`` would unpickle: a
    crafted one in a copied run directory would run its code. Raises SweepInterrupted when Tune
    returns with trials unfinished (Ctrl-C)."""
    preflight_sweep(cfg)
    # Keeping few checkpoints forces frequent experiment snapshots; that is wanted, not a warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    shared = _shared_data(cfg, run, data, labeled)
    tuned_file = run.tune / OPTUNA_BEST
    if cfg.sweep.search == "optuna" and resume and tuned_file.is_file():
        tuned = json.loads(tuned_file.read_text(encoding="utf-8"))
    else:
        tuned = optuna_phase(cfg, run, shared) if cfg.sweep.search == "optuna" else None
    points = grid_points(cfg, tuned)
    if resume and run.tune_experiment.exists():
        points, shared["resume"] = _points_to_resume(cfg, run, points)
        if not points:
            log.info("[sweep] every trial has finished: nothing to resume")
            return 0
    # Every point overrides every axis, so each of the len(points) samples is exactly one trial;
    # the axes only tell Tune the keys and their values.
    axes = {key: tune.grid_search(sorted({p[key] for p in points})) for key in points[0]}
    tuner = tune.Tuner(
        _trainable(cfg, shared), param_space=axes,
        tune_config=tune.TuneConfig(search_alg=BasicVariantGenerator(points_to_evaluate=points),
                                    num_samples=len(points), max_concurrent_trials=cfg.sweep.max_concurrent_trials,
                                    reuse_actors=True, trial_dirname_creator=_trial_dirname),
        run_config=_run_config(cfg, run, len(points)),
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
            f"the sweep stopped with {len(grid) - finished - errors} trials unfinished; "
            f"continue it with: raydistill sweep {run.root} --resume")
    shutil.rmtree(run.tune / RESUME_DIR, ignore_errors=True)
    return len(grid)


def _points_to_resume(cfg: ExperimentConfig, run: RunDir,
                      points: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The points without a finished trial, and, by point, the staged last checkpoint of its
    unfinished trial. Unfinished trial directories are removed once their checkpoint is staged
    (in ``<run>/tune/resume``), so each (strategy, T, seed) ends with exactly one directory."""
    try:
        df = load_results(run.root, expected_epochs=cfg.student.epochs)
    except CheckpointError:  # the sweep never got as far as a trial directory
        return points, {}
    done = {_point_key(r) for r in df.to_dict("records") if r["status"] == COMPLETED}
    staged_dir = run.tune / RESUME_DIR
    staged = {p.name: str(p) for p in staged_dir.iterdir()} if staged_dir.is_dir() else {}
    for row in df[df["trial_dir"].notna()].sort_values("finished_at", na_position="first").to_dict("records"):
        key, trial_dir = _point_key(row), Path(row["trial_dir"])
        if key in done or not trial_dir.is_dir():
            continue
        checkpoints = sorted(trial_dir.glob("checkpoint_*"))
        if checkpoints:  # the newest attempt's last checkpoint wins (rows are oldest first)
            target = staged_dir / key
            shutil.rmtree(target, ignore_errors=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(checkpoints[-1]), target)
            staged[key] = str(target)
        shutil.rmtree(trial_dir)
    todo = [p for p in points if _point_key(p) not in done]
    staged = {key: staged[key] for key in map(_point_key, todo) if key in staged}
    log.info(f"[sweep] resuming: {len(points) - len(todo)} of {len(points)} trials finished, {len(todo)} to run "
             f"({len(staged)} from their last checkpoint)")
    return todo, staged


def _latest_checkpoint(trial_dir: Path) -> Path:
    checkpoints = sorted(trial_dir.glob("checkpoint_*"))
    if not checkpoints:
        raise CheckpointError(f"trial {trial_dir} has no checkpoint")
    return checkpoints[-1] / MODEL_DIR


def export_winner(cfg: ExperimentConfig, run: RunDir, data) -> dict[str, Any]:
    """Copy the best-validation seed of the best-mean cell to ``<run>/student`` with
    provenance.json. The report gives the cell's test accuracy as mean ± std over seeds (chosen
    on validation, reported on test) from each trial's test logits, computed here for trials of
    a sweep that predates them."""
    results = load_results(run.root)
    strategy, temperature = choose_winner(summarize(results))
    cell = results[(results["strategy"] == strategy) & (results["temperature"] == temperature)
                   & (results["status"] == "TERMINATED")]
    cell = cell.sort_values(["val_accuracy", "seed"], ascending=[False, True])
    best = cell.iloc[0]
    sources = [_latest_checkpoint(Path(d)) for d in cell["trial_dir"]]
    missing = [i for i, d in enumerate(cell["trial_dir"]) if not (Path(d) / TEST_LOGITS).is_file()]
    computed = models_split_logits(
        [str(sources[i]) for i in missing], {"test": data.encoded["test"]}, eval_batch_size(cfg.student.batch_size),
        data.pad_token_id, num_cpus=min(1.0, cfg.sweep.cpus_per_trial), perf=cfg.performance) if missing else []
    for i, out in zip(missing, computed):
        save_array(Path(cell["trial_dir"].iloc[i]) / TEST_LOGITS, out["test"])
    test_logits = [load_array(Path(d) / TEST_LOGITS) for d in cell["trial_dir"]]
    if run.student.exists():
        shutil.rmtree(run.student)
    shutil.copytree(sources[0], run.student)
    data.tokenizer.save_pretrained(str(run.student))
    save_array(run.student_logits("validation"), load_array(Path(best["trial_dir"]) / VAL_LOGITS))
    save_array(run.student_logits("test"), test_logits[0])
    layers = json.loads((sources[0] / "provenance.json").read_text())
    test_accuracy = [float((t.argmax(-1) == data.encoded["test"].labels).mean()) for t in test_logits]
    provenance = {
        **layers, "temperature": float(temperature), "alpha": float(best["alpha"]), "lr": float(best["lr"]),
        "seed": int(best["seed"]), "seeds": sorted(int(s) for s in cell["seed"]),
        "exported": "the seed with the best validation accuracy in the winning cell",
        "teacher_sha256": _file_hash(run.teacher / "model.safetensors"),
        "metrics": {"val_accuracy_mean": float(cell["val_accuracy"].mean()),
                    "val_accuracy": float(best["val_accuracy"]),
                    "test_accuracy": test_accuracy[0],
                    "test_accuracy_mean": float(np.mean(test_accuracy)),
                    "test_accuracy_std": float(np.std(test_accuracy, ddof=1)) if len(test_accuracy) > 1 else 0.0},
    }
    atomic_write_json(run.student / "provenance.json", provenance)
    log.info(f"[sweep] exported the best-mean cell's best seed: {strategy} T={temperature:g} "
             f"(seed {int(best['seed'])}) -> {run.student}")
    return provenance


def _file_hash(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
