"""The teacher stage: a Ray Train ``TorchTrainer`` that trains the teacher over active-learning
rounds, with an :class:`ActiveLearner` actor choosing each round's new labels.

``rounds`` counts acquisitions: the teacher trains ``rounds + 1`` times (on the initial set,
then after each acquisition). Rank 0 hands the current weights to the actor (one object-store
put); the new labelled set is broadcast to every rank. Each round ends with a checkpoint (an HF
``save_pretrained`` directory plus the round number); a restarted worker group resumes from it
and re-asks the actor for the next round, which answers idempotently, so no pick is lost or
doubled.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import ray
import ray.train
import ray.train.collective
import ray.train.torch
import torch
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer
from transformers import get_linear_schedule_with_warmup

from raydistill.platform import metrics as M
from raydistill.platform.acquisition import ACQUISITIONS
from raydistill.platform.config import ExperimentConfig, PerformanceConfig
from raydistill.platform.errors import CheckpointError
from raydistill.platform.export import Provenance, export_model, model_layers
from raydistill.platform.fastpath import (
    attn_implementation,
    autocast_context,
    loader_kwargs,
    make_optimizer,
    maybe_compile,
    pin_memory,
    select_device,
)
from raydistill.platform.logs import log
from raydistill.platform.models import (
    build_teacher,
    derive_seed,
    eval_batch_size,
    load_classifier,
    predict_logits,
    save_classifier,
    set_seed,
    unwrap,
)
from raydistill.platform.prepared import PreparedData, load_encoded, transfer_indices
from raydistill.platform.rundir import (
    ArmDir,
    CheckpointDir,
    RunDir,
    atomic_write_json,
    atomic_write_text,
    load_array,
    save_array,
)
from raydistill.platform.tracking import TeacherTracker
from raydistill.trainables import failures
from raydistill.trainables.active_learner import ActiveLearner, ScoringPlan
from raydistill.trainables.inference import idle_cpus, split_logits
from raydistill.trainables.resources import Demand, preflight

RoundListener = Callable[[str, dict[str, Any]], None]  # (acquisition, curve point)


@dataclass(frozen=True)
class TeacherRun:
    """What one active-learning run produced."""

    acquisition: str
    checkpoint_dir: Path
    curve: list[dict[str, Any]]
    labeled: list[int]


def _labeled_for_round(learner, round: int, model: torch.nn.Module, rank: int) -> list[int]:
    """Round 0: the initial set. Later rounds: rank 0 asks the actor to acquire with the
    current weights; after a barrier every rank reads the same set from the actor."""
    if round == 0:
        return ray.get(learner.labeled_indices.remote(0))
    if rank == 0:
        base = unwrap(model)
        weights = {k: v.detach().cpu() for k, v in base.state_dict().items()}
        ray.get(learner.acquire.remote(round, [ray.put(weights)], base.config.to_dict()))
    ray.train.collective.barrier()
    return ray.get(learner.labeled_indices.remote(round))


def _train_epoch(model, loader, optimizer, scheduler, grad_clip: float, device,
                 perf: PerformanceConfig | None = None) -> float:
    model.train()
    total, count = 0.0, 0
    for batch in loader:
        with autocast_context(device, perf):
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"],
                labels=batch["labels"],
            )
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        scheduler.step()
        total += float(out.loss.detach()) * len(batch["labels"])
        count += len(batch["labels"])
    return total / max(count, 1)


def _evaluate(model, encoded, batch_size: int, pad_token_id: int, device, rank: int,
              world: int, perf: PerformanceConfig | None = None) -> torch.Tensor:
    """Validation logits (N, C) on every rank, each rank scoring every world-th example, so
    no core idles while rank 0 evaluates alone. ``model`` runs as given: never the DDP wrapper
    (ranks score different shards; DDP's forward would wait on the others)."""
    from raydistill.platform.text import make_loader

    shard = list(range(rank, len(encoded), world))
    loader = make_loader(encoded, batch_size, indices=shard, shuffle=False, pad_token_id=pad_token_id,
                         **loader_kwargs(device, perf))
    logits = predict_logits(model, loader, device, perf)  # rows in shard order
    if world == 1:
        return logits
    parts: list[Any] = [None] * world
    torch.distributed.all_gather_object(parts, (shard, logits))
    merged = torch.empty(len(encoded), logits.shape[1])
    for indices, part in parts:
        merged[indices] = part
    return merged


def _save_checkpoint(model, round: int, labeled_count: int, acquisition: str, directory: Path) -> None:
    checkpoint = CheckpointDir(directory)
    save_classifier(model, checkpoint.model)
    atomic_write_json(checkpoint.state, {"round": round, "labeled_count": labeled_count, "acquisition": acquisition})


def _rng_states(world: int) -> list[np.ndarray]:
    """Every rank's torch RNG state (dropout), gathered to all; every rank must call it."""
    state = torch.get_rng_state().numpy()
    if world == 1:
        return [state]
    states: list[Any] = [None] * world
    torch.distributed.all_gather_object(states, state)
    return states


def _restore(checkpoint, rank: int, attention: str | None = None) -> tuple[torch.nn.Module | None, int]:
    """The weights and the next round from a Train checkpoint, or (None, 0) without one. When
    the checkpoint holds this rank's RNG state, it is restored: a resumed round draws the same
    dropout masks as the uninterrupted one, so it trains the same weights and the next
    acquisition picks the same examples."""
    if checkpoint is None:
        return None, 0
    with checkpoint.as_directory() as directory:
        files = CheckpointDir(Path(directory))
        state = json.loads(files.state.read_text(encoding="utf-8"))
        model = load_classifier(files.model, attention)
        rng = files.rank_rng(rank)
        if rng.is_file():
            torch.set_rng_state(torch.from_numpy(load_array(rng)))
    return model, int(state["round"]) + 1


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Train worker: ``rounds + 1`` rounds of (acquire, train, evaluate, checkpoint).

    A deterministic error (one of raydistill's own) is recorded before it propagates, and a
    worker group that Train restarts after it ends at once: only system failures are retried."""
    if failures.recorded(config["al_dir"]) is not None:
        return
    with failures.recording(config["al_dir"]):
        _train_rounds(config)


def _train_rounds(config: dict[str, Any]) -> None:
    from raydistill.platform.text import make_loader

    cfg = ExperimentConfig.model_validate(config["cfg"])
    perf = cfg.performance
    torch.set_num_threads(cfg.threads_per_worker)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # Memory-mapped from the run's cache: a worker pages in the labelled rows it trains on.
    pool, validation = (load_encoded(Path(config[name]), mmap=True) for name in ("pool_file", "validation_file"))
    learner = ray.get_actor(config["learner_name"], namespace=config["namespace"])
    set_seed(cfg.seed)
    fresh = build_teacher(cfg.teacher, len(config["label_names"]), config["vocab_size"],
                          cfg.tokenizer.max_length, config["pad_token_id"], seed=cfg.seed,
                          label_names=config["label_names"], attn_implementation=attn_implementation(perf))
    initial_state = {k: v.clone() for k, v in fresh.state_dict().items()}
    # A restarted worker group resumes from its own last checkpoint; a new arm may start from
    # another arm's round 0 (Train V2 has no ``resume_from_checkpoint``).
    start = ray.train.get_checkpoint()
    if start is None and config.get("start_from"):
        start = Checkpoint.from_directory(config["start_from"])
    restored, start_round = _restore(start, rank, attn_implementation(perf))
    # Ray's device for this worker, unless torch sees no CUDA (a GPU Ray assigned on a node
    # without one): then the CPU, and Ray is told not to move the model or batches to CUDA.
    device = select_device(cfg.teacher.use_gpu, ray.train.torch.get_device)
    model = ray.train.torch.prepare_model(restored or fresh, move_to_device=device)
    # Compiled views share the weights: DDP's for training, the bare model's for evaluation.
    train_model, eval_model = maybe_compile(model, perf), maybe_compile(unwrap(model), perf)
    t = cfg.teacher
    for round in range(start_round, cfg.al.rounds + 1):
        if config.get("round_hook"):  # e.g. a test's fault injection: called at every round start
            config["round_hook"](round, rank)
        started = time.monotonic()
        labeled = _labeled_for_round(learner, round, model, rank)
        acquired = time.monotonic()
        if cfg.al.retrain == "scratch" and round > 0:
            unwrap(model).load_state_dict(initial_state)
        optimizer = make_optimizer(model.parameters(), t.lr, t.weight_decay, device, perf)
        steps = t.epochs_per_round * -(-len(labeled) // (t.batch_size * world))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(t.warmup_ratio * steps), steps)
        train_loss = 0.0
        for epoch in range(t.epochs_per_round):
            loader = make_loader(pool, t.batch_size, indices=labeled, shuffle=True,
                                 seed=derive_seed(cfg.seed, round, epoch), num_replicas=world,
                                 rank=rank, pad_token_id=config["pad_token_id"], **loader_kwargs(device, perf))
            if device.type == "cuda":  # Ray copies batches on a side stream, non-blocking when pinned
                loader = ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False,
                                                             auto_transfer=pin_memory(device, perf))
            train_loss = _train_epoch(train_model, loader, optimizer, scheduler, t.grad_clip, device, perf)
        row = {M.ROUND: round, M.LABELED_COUNT: len(labeled), M.TRAIN_LOSS: train_loss,
               "acquire_s": acquired - started, "train_s": time.monotonic() - acquired}
        _finish_round(model, eval_model, row, validation, learner, config, rank, world, device, perf)


def _finish_round(model, eval_model, row, validation, learner, config, rank, world, device, perf) -> None:
    """Evaluate (sharded over ranks, with ``eval_model``: the bare model, compiled when asked),
    then on rank 0 record the curve point and the round's validation logits (the report's
    bootstrap band); report on every rank (it is a barrier)."""
    batch = eval_batch_size(config["cfg"]["teacher"]["batch_size"])
    started = time.monotonic()
    logits = _evaluate(eval_model, validation, batch, config["pad_token_id"], device, rank, world, perf)
    row["eval_s"] = time.monotonic() - started
    rng = _rng_states(world)
    if rank != 0:
        ray.train.report(row)
        return
    row.update(M.reported(M.evaluate(logits.numpy(), validation.labels)))
    arm = ArmDir(Path(config["al_dir"]))
    save_array(arm.round_logits(row[M.ROUND]), logits.numpy())
    ray.get(learner.record.remote(row[M.ROUND], row))
    if row[M.ROUND] == 0:  # the other arms start from here: same initial set, same seed
        _save_checkpoint(unwrap(model), 0, row[M.LABELED_COUNT], config["acquisition"], arm.round0)
    with tempfile.TemporaryDirectory() as tmp:
        _save_checkpoint(unwrap(model), row[M.ROUND], row[M.LABELED_COUNT], config["acquisition"], Path(tmp))
        for r, state in enumerate(rng):
            save_array(CheckpointDir(Path(tmp)).rank_rng(r), state)
        ray.train.report(row, checkpoint=Checkpoint.from_directory(tmp))


class _RoundProgress:
    """Logs each finished round from the driver (workers' stdout is not forwarded by default)
    by polling the actor's learning curve while ``fit`` blocks, and hands each round to
    ``on_round(acquisition, point)`` (the stage's tracking: TensorBoard, MLflow), so those show
    a round as it finishes."""

    def __init__(self, learner, acquisition: str, rounds: int, interval_s: float = 1.0,
                 on_round: RoundListener | None = None) -> None:
        self._learner, self._acquisition, self._interval = learner, acquisition, interval_s
        self._on_round = on_round
        self._rounds = rounds  # acquisitions: rounds 0..rounds train
        self._printed: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "_RoundProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._print_new()

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            self._print_new()

    def _print_new(self) -> None:
        try:
            curve = ray.get(self._learner.curve.remote(), timeout=5)
        except Exception:  # the actor may be restarting; the next poll catches up
            return
        for point in curve:
            if point[M.ROUND] not in self._printed:
                self._printed.add(point[M.ROUND])
                log.info(f"[teacher/{self._acquisition}] round {point[M.ROUND]}/{self._rounds}: labelled "
                         f"{point[M.LABELED_COUNT]}, train loss {point[M.TRAIN_LOSS]:.4f}, val loss "
                         f"{point[M.VAL_LOSS]:.4f}, val acc {point[M.VAL_ACCURACY]:.4f} (acquire "
                         f"{point.get('acquire_s', 0):.1f}s, train {point.get('train_s', 0):.1f}s, evaluate "
                         f"{point.get('eval_s', 0):.1f}s)")
                if self._on_round is not None:
                    self._on_round(self._acquisition, point)


def preflight_teacher(cfg: ExperimentConfig) -> None:
    """Raise ResourceError when the teacher stage (workers and scorers at once) can never run;
    warn when it will wait for resources."""
    t, al = cfg.teacher, cfg.al
    scorers = al.scorers if any(ACQUISITIONS[arm].needs_model for arm in al.arms) else 0
    demands = [
        Demand("CPU", t.cpus_per_worker, t.num_workers,
               f"teacher.num_workers x teacher.cpus_per_worker = {t.num_workers} x {t.cpus_per_worker:g}"),
        Demand("CPU", al.cpus_per_scorer, scorers,
               f"al.scorers x al.cpus_per_scorer = {scorers} x {al.cpus_per_scorer:g}"),
        Demand("GPU", t.gpus_per_worker if t.use_gpu else 0.0, t.num_workers,
               f"teacher.num_workers x teacher.gpus_per_worker = {t.num_workers} x {t.gpus_per_worker:g}"),
        Demand("GPU", al.gpus_per_scorer, scorers,
               f"al.scorers x al.gpus_per_scorer = {scorers} x {al.gpus_per_scorer:g}"),
    ]
    preflight("the teacher stage", demands, all_at_once=True)


def train_teacher(
    cfg: ExperimentConfig,
    run: RunDir,
    data: PreparedData,
    acquisition: str,
    round_hook: Callable[[int, int], None] | None = None,
    start_from: TeacherRun | None = None,
    on_round: RoundListener | None = None,
) -> TeacherRun:
    """Train one active-learning run with ``acquisition`` and return its final checkpoint.

    ``start_from``: another arm of the same run, whose round 0 (the same initial set and seed,
    so the same model) this arm reuses instead of training it again. ``on_round``: called on
    the driver with each round's curve point as it finishes."""
    preflight_teacher(cfg)
    namespace = ray.get_runtime_context().namespace
    learner_name = f"al-{run.root.name}-{acquisition}-{uuid.uuid4().hex[:6]}"
    al = cfg.al
    plan = ScoringPlan(acquisition, al.scorers, al.cpus_per_scorer, al.gpus_per_scorer,
                       al.score_batch_size, al.mc_dropout_samples, data.pad_token_id,
                       cfg.threads_per_worker, cfg.performance)
    arm = run.arm(acquisition)
    learner = ActiveLearner.options(name=learner_name, namespace=namespace).remote(
        str(arm.path),
        {"pool_size": len(data.encoded["train"]), "initial_labeled": al.initial_labeled,
         "query_size": al.query_size, "rounds": al.rounds, "seed": cfg.seed},
        plan, str(data.files["train"]))
    round0 = None
    if start_from is not None:
        origin = run.arm(start_from.acquisition)
        round0 = str(origin.round0)
        ray.get(learner.record.remote(0, start_from.curve[0]))
        arm.path.mkdir(parents=True, exist_ok=True)
        shutil.copy(origin.round_logits(0), arm.round_logits(0))
    t = cfg.teacher
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg.model_dump(mode="json"), "pool_file": str(data.files["train"]),
            "validation_file": str(data.files["validation"]),
            "learner_name": learner_name, "namespace": namespace, "acquisition": acquisition,
            "label_names": list(data.dataset.label_names), "vocab_size": len(data.tokenizer),
            "al_dir": str(arm.path), "start_from": round0,
            "pad_token_id": data.pad_token_id, "round_hook": round_hook,
        },
        scaling_config=ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": t.gpus_per_worker} if t.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=f"teacher-{acquisition}", storage_path=str(run.train),
            checkpoint_config=CheckpointConfig(num_to_keep=t.checkpoints_to_keep),
            failure_config=FailureConfig(max_failures=t.max_failures),
        ),
    )
    try:
        with _RoundProgress(learner, acquisition, cfg.al.rounds, on_round=on_round):
            result = failures.fit(trainer, arm.path)
        if result.checkpoint is None:
            raise CheckpointError(f"teacher run '{acquisition}' produced no checkpoint: {result.error}")
        curve = ray.get(learner.curve.remote())
        labeled = ray.get(learner.labeled_indices.remote())
    finally:
        ray.kill(learner)
    return TeacherRun(acquisition, CheckpointDir(Path(result.checkpoint.path)).model, curve, labeled)


def write_curve(run: RunDir, runs: list[TeacherRun]) -> Path:
    """``al/curve.csv``: one line per (acquisition, round)."""
    fields = ["acquisition", M.ROUND, M.LABELED_COUNT, M.VAL_ACCURACY, M.VAL_LOSS, M.TRAIN_LOSS]
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in runs:
        for point in r.curve:
            writer.writerow({"acquisition": r.acquisition, **point})
    atomic_write_text(run.al_curve, text.getvalue())
    return run.al_curve


def export_teacher(cfg: ExperimentConfig, run: RunDir, data: PreparedData, checkpoint_dir: Path) -> Provenance:
    """Export the final checkpoint to ``<run>/teacher`` with its logits on the evaluation splits
    and on the transfer set (the pool rows no student reads stay NaN, so a misread would show,
    not pass) and its card; returns the card."""
    pool = data.encoded["train"]
    transfer = transfer_indices(len(pool), cfg.student.transfer_size, cfg.seed)
    splits = {"train": pool.subset(transfer), "validation": data.encoded["validation"],
              "test": data.encoded["test"]}
    logits = split_logits(str(checkpoint_dir), splits, eval_batch_size(cfg.student.batch_size), data.pad_token_id,
                          threads=idle_cpus(), num_cpus=min(1.0, cfg.sweep.cpus_per_trial),
                          num_gpus=1 if cfg.teacher.use_gpu else 0, perf=cfg.performance)
    pool_logits = np.full((len(pool), logits["train"].shape[1]), np.nan, dtype=np.float32)
    pool_logits[transfer] = logits["train"]
    logits["train"] = pool_logits
    card = Provenance(
        role="teacher", num_layers=model_layers(checkpoint_dir), teacher_num_layers=model_layers(checkpoint_dir),
        seed=cfg.seed, exported=f"the {cfg.al.acquisition} arm's last round",
        **{split: M.evaluate(logits[split], data.encoded[split].labels) for split in ("validation", "test")})
    export_model(checkpoint_dir, run.teacher, data.tokenizer, card, logits)
    return card


def run_teacher_stage(cfg: ExperimentConfig, run: RunDir, data: PreparedData) -> dict[str, Any]:
    """The whole teacher stage: the chosen acquisition (+ the random baseline when asked),
    the exported teacher, its cached logits and the learning curve, tracked round by round
    (``tracking``: TensorBoard under ``RUN/tensorboard/teacher``, MLflow when asked)."""
    started = time.monotonic()
    tracker = TeacherTracker(cfg, run.root)  # a missing mlflow fails here, before any training

    def tracked(acquisition: str, **kwargs) -> TeacherRun:
        with tracker.arm(acquisition):
            arm = train_teacher(cfg, run, data, acquisition, on_round=tracker.log_round, **kwargs)
            tracker.log_curve(acquisition, arm.curve)  # any round the progress poll missed
        return arm

    first, *others = cfg.al.arms
    runs = [tracked(first)]
    runs += [tracked(arm, start_from=runs[0]) for arm in others]  # the same round 0
    write_curve(run, runs)
    card = export_teacher(cfg, run, data, runs[0].checkpoint_dir)
    log.info(f"[teacher] exported to {run.teacher} (val acc {card.validation[M.ACCURACY]:.4f}, "
             f"test acc {card.test[M.ACCURACY]:.4f}) in {time.monotonic() - started:.0f}s")
    return {"runs": runs, "card": card}
