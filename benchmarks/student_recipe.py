"""Probe a student recipe on a finished teacher, outside Ray: one strategy, one seed, the KD loop
of the sweep (same loss, transfer set, loader and schedule), then its validation accuracy and
training seconds. How configs/default.yaml's student settings were chosen.

    python benchmarks/student_recipe.py RUN_DIR --strategy even --batch-size 16 --lr 3e-4 \
        --transfer 1200 --epochs 2 --temperature 2 --alpha 0.1 --freeze-embeddings

RUN_DIR is a run whose teacher stage finished (``raydistill teacher configs/default.yaml``).
Prints one JSON line. One thread, as a sweep trial has with ``sweep.cpus_per_trial: 1``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

from raydistill.platform.config import load_config
from raydistill.platform.data import load_dataset
from raydistill.platform.layers import build_student
from raydistill.platform.losses import kd_loss
from raydistill.platform.models import eval_batch_size, load_classifier, model_inputs, predict_logits, set_seed
from raydistill.platform.prepared import transfer_indices
from raydistill.platform.text import encode, load_tokenizer, make_loader

CPU = torch.device("cpu")


@dataclass
class Probe:
    """What every probe on one run shares: the pool, validation split, labelled mask and the
    teacher's logits on the transfer set (computed once, as the sweep does)."""

    cfg: Any
    teacher: torch.nn.Module
    pool: Any
    val: Any
    labeled: np.ndarray
    transfer: np.ndarray
    cache: torch.Tensor


def prepare(run_dir: Path, transfer_size: int) -> Probe:
    cfg = load_config(run_dir / "config.yaml")
    data = load_dataset(cfg.data)
    tokenizer = load_tokenizer(run_dir / "teacher")
    pool = encode(tokenizer, data.split("train"), cfg.tokenizer.max_length)
    val = encode(tokenizer, data.split("validation"), cfg.tokenizer.max_length)
    picks = json.loads((run_dir / "al" / cfg.al.acquisition / "state.json").read_text())["learner"]["picks"]
    labeled = np.zeros(len(pool), bool)
    labeled[np.concatenate([np.asarray(p) for p in picks])] = True
    teacher = load_classifier(run_dir / "teacher")
    transfer = transfer_indices(len(pool), transfer_size, cfg.seed)
    cache = torch.full((len(pool), 2), float("nan"))
    cache[transfer] = predict_logits(teacher, make_loader(pool.subset(transfer), eval_batch_size(16)), CPU)
    return Probe(cfg, teacher, pool, val, labeled, transfer, cache)


def distil(probe: Probe, strategy: str, batch_size: int, lr: float, epochs: int, temperature: float,
           alpha: float, freeze_embeddings: bool, seed: int) -> dict[str, float]:
    """One student, the sweep's KD loop outside Ray: validation accuracy, training and total seconds."""
    started = time.perf_counter()
    cfg = probe.cfg
    set_seed(seed)
    student, _ = build_student(probe.teacher, strategy, cfg.student.num_layers, cfg.sweep.custom_layers, seed=seed)
    if freeze_embeddings:
        student.base_model.embeddings.requires_grad_(False)
    optimizer = torch.optim.AdamW([q for q in student.parameters() if q.requires_grad], lr=lr, weight_decay=0.01)
    steps = epochs * -(-len(probe.transfer) // batch_size)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
    train_started = time.perf_counter()
    student.train()
    for epoch in range(epochs):
        for batch in make_loader(probe.pool, batch_size, indices=probe.transfer, shuffle=True, seed=seed * 1000 + epoch):
            index = batch["index"]
            out = student(**model_inputs(batch, CPU))
            loss = kd_loss(out.logits, probe.cache[index], batch["labels"], torch.as_tensor(probe.labeled[index]),
                           temperature, alpha, 0.0, None, None, None, batch["attention_mask"])
            optimizer.zero_grad()
            loss.total.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
    train_s = time.perf_counter() - train_started
    logits = predict_logits(student, make_loader(probe.val, eval_batch_size(batch_size)), CPU)
    accuracy = float((logits.argmax(-1).numpy() == probe.val.labels).mean())
    return {"val_accuracy": round(accuracy, 4), "train_s": round(train_s, 1),
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--strategy", default="even")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--transfer", type=int, default=1200)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--freeze-embeddings", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    probe = prepare(args.run_dir, args.transfer)
    figures = distil(probe, args.strategy, args.batch_size, args.lr, args.epochs, args.temperature,
                     args.alpha, args.freeze_embeddings, args.seed)
    print(json.dumps({**{k: v for k, v in vars(args).items() if k != "run_dir"},
                      "val_accuracy": figures["val_accuracy"], "train_s": figures["train_s"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
