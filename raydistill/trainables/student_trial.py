"""One sweep trial: build a k-layer student from the teacher directory (never a shared
object) and distil it with the KD loss: cross-entropy on the examples the active learner paid
for, KL to the teacher's soft labels on the whole transfer set. With ``beta = 0`` the teacher's
pool logits come from the per-run cache (shared through the object store), so no trial runs the
teacher. The trial checkpoints every epoch and resumes from Tune's or ``sweep --resume``'s
checkpoint as if never stopped.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune
from transformers import get_linear_schedule_with_warmup

from raydistill.platform import metrics as M
from raydistill.platform.config import ExperimentConfig
from raydistill.platform.export import Provenance
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
from raydistill.platform.losses import kd_loss
from raydistill.platform.models import (
    count_parameters,
    derive_seed,
    eval_batch_size,
    load_classifier,
    model_inputs,
    predict_logits,
    save_classifier,
    set_seed,
)
from raydistill.platform.rundir import PROVENANCE, CheckpointDir, TrialDir, atomic_write_json, load_array, save_array
from raydistill.platform.text import Encoded, make_loader
from raydistill.trainables import failures


def _device(cfg: ExperimentConfig) -> torch.device:
    """CUDA for a trial with a GPU share, unless torch sees none (then the CPU, whatever Ray gave)."""
    return select_device(cfg.sweep.gpus_per_trial > 0)


def _distil_epoch(student, teacher, shared: dict[str, Any], trial: dict[str, Any], optimizer,
                  scheduler, epoch: int, device, layer_map: list[int]) -> dict[str, float]:
    """One pass over the pool; returns the mean of each loss term. ``layer_map``: the teacher
    layer each student layer's hidden state is matched to (``beta > 0``)."""
    cfg: ExperimentConfig = shared["cfg_obj"]
    perf = cfg.performance
    pool: Encoded = shared["pool"]
    labeled = torch.as_tensor(shared["labeled_mask"])
    cached = None if teacher is not None else torch.as_tensor(shared["teacher_pool_logits"])
    loader = make_loader(pool, cfg.student.batch_size, indices=shared["transfer"], shuffle=True,
                         seed=derive_seed(0, trial["seed"], epoch), pad_token_id=shared["pad_token_id"],
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
                           layer_map if beta > 0 else None,
                           inputs["attention_mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.student.grad_clip)
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
    logits = _logits(student, val, shared, device).numpy()
    return M.reported(M.evaluate(logits, val.labels, shared["teacher_val_logits"])), logits


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
    k = int(trial.get("num_layers", cfg.student.num_layers))  # the frontier varies the depth per trial
    student, provenance = build_student(teacher, trial["strategy"], k, cfg.sweep.custom_layers, seed=trial["seed"])
    layer_map = hidden_layer_map(trial["strategy"], teacher.config.num_hidden_layers, k, cfg.sweep.custom_layers)
    teacher = maybe_compile(teacher.to(device).eval(), perf) if cfg.student.beta > 0 else None  # beta = 0: cache only
    start_epoch, resumed, history = 0, {}, []
    checkpoint = tune.get_checkpoint()  # Tune's own retry of this trial (a lost worker)
    staged = shared.get("resume", {}).get(point_key(trial))  # `sweep --resume` after a stop
    if checkpoint is not None or staged:
        with (checkpoint.as_directory() if checkpoint is not None else contextlib.nullcontext(staged)) as directory:
            files = CheckpointDir(Path(directory))
            student = load_classifier(files.model, attention)
            state = json.loads(files.state.read_text())
            start_epoch, history = state["epoch"], state.get("history", [])
            resumed = _read_resume_state(files)
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
    card = Provenance(role="student", num_layers=provenance.student_num_layers,
                      teacher_num_layers=provenance.teacher_num_layers, strategy=trial["strategy"],
                      teacher_layers=provenance.teacher_layers, temperature=trial["temperature"],
                      alpha=trial["alpha"], lr=trial["lr"], seed=trial["seed"], exported="a sweep trial's checkpoint")
    fast = maybe_compile(student, perf)  # runs the passes; ``student`` (same weights) is saved
    for epoch in range(start_epoch, cfg.student.epochs):
        train_metrics = _distil_epoch(fast, teacher, shared, trial, optimizer, scheduler, epoch, device, layer_map)
        last = epoch + 1 == cfg.student.epochs
        val_metrics = {}
        if last or cfg.student.validate_every_epoch:
            val_metrics, val_logits = _validate(fast, shared, device)
        if last:
            trial_dir = TrialDir(Path(shared["experiment_dir"]) / Path(tune.get_context().get_trial_dir()).name)
            save_array(trial_dir.val_logits, val_logits.astype(np.float32))
            # Every trial's test logits: the report re-tests the validation verdicts on test
            # examples no choice has seen (the confirmation), not only the winner's.
            save_array(trial_dir.test_logits, _logits(fast, shared["test"], shared, device).numpy().astype(np.float32))
        metrics = {**train_metrics, **val_metrics, **fixed, M.EPOCH: epoch + 1}
        history.append(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            files = CheckpointDir(Path(tmp))
            save_classifier(student, files.model, extra={PROVENANCE: card.model_dump(mode="json")})
            atomic_write_json(files.state, {"epoch": epoch + 1, "history": history})
            torch.save(optimizer.state_dict(), files.optimizer)
            save_array(files.rng, torch.get_rng_state().numpy())
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def _read_resume_state(files: CheckpointDir) -> dict[str, Any]:
    """The optimizer state and RNG of a mid-trial checkpoint (absent in older checkpoints).
    AdamW's moments are tensors only, read with ``weights_only=True`` (no code unpickled)."""
    out: dict[str, Any] = {}
    if files.optimizer.is_file():
        out["optimizer"] = torch.load(files.optimizer, map_location="cpu", weights_only=True)
    if files.rng.is_file():
        out["rng"] = torch.from_numpy(load_array(files.rng))
    return out




def point_key(point: dict[str, Any]) -> str:
    """A trial's point in words, e.g. ``odd-T2-seed1`` (``uniform-k2-T2-seed1`` at a set depth):
    its directory tag and its resume key."""
    depth = f"-k{int(point['num_layers'])}" if point.get("num_layers") is not None else ""
    return f"{point['strategy']}{depth}-T{float(point['temperature']):g}-seed{int(point['seed'])}"
