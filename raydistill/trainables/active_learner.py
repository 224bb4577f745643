"""The ActiveLearner actor: owns the pool state, scores the unlabelled pool in parallel and
selects what the annotator labels next.

The selection logic is :class:`raydistill.platform.pool.PoolLearner` (plain, tested without
Ray); this actor adds what needs Ray: persistence that survives a restart (``max_restarts=-1``
reloads ``state.json``), and the fan-out of pool scoring over ``al.scorers`` Scorer actors
(kept for the whole run, each with its own CPU/GPU fraction). The pool is scored in shards of
whole batches that each scorer reads from the memory-mapped cache: no process and no object
ever holds the whole tokenised pool. ``acquire`` is idempotent per
round, so a retried call (the actor or a Train worker restarted) never double-adds or loses a
pick.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from raydistill.platform.acquisition import ACQUISITIONS, score_batches
from raydistill.platform.config import PerformanceConfig
from raydistill.platform.fastpath import attn_implementation, maybe_compile, select_device
from raydistill.platform.layers import lookup
from raydistill.platform.machine import release_freed_memory
from raydistill.platform.pool import PoolLearner
from raydistill.platform.prepared import load_encoded
from raydistill.platform.rundir import ArmDir, atomic_write_json
from raydistill.platform.text import LengthBucketSampler


# Texts per scoring call: bounds what one call reads and holds, and deals the pool out in small
# enough pieces that a fast scorer takes more of them than a slow one.
SHARD_TEXTS = 2048
# Calls queued per scorer: the next shard is already waiting when one finishes.
IN_FLIGHT_PER_SCORER = 2


@dataclass(frozen=True)
class ScoringPlan:
    """How the pool is scored: ``scorers`` actors with these resources, shards of about
    ``shard_texts`` texts in whole batches, run with the fast paths of ``performance`` (None:
    the defaults)."""

    acquisition: str
    scorers: int
    num_cpus: float
    num_gpus: float
    batch_size: int
    mc_samples: int
    pad_token_id: int
    threads: int = 1
    performance: PerformanceConfig | None = None
    shard_texts: int = SHARD_TEXTS


@ray.remote(max_restarts=-1, max_task_retries=-1)
class Scorer:
    """One pool-scoring worker. Kept alive for the whole active-learning run and keeps its model
    object, so each round pays only for loading new weights and inference — not for a new
    process importing torch and transformers, nor for rebuilding the model. It reads the rows of
    each shard from the memory-mapped pool cache (``pool_file``, on storage every node sees) and
    lets go of the mapping after the call: its memory does not grow with the pool."""

    def __init__(self, plan: ScoringPlan, pool_file: str) -> None:
        torch.set_num_threads(plan.threads)
        self._plan = plan
        self._pool_file = Path(pool_file)
        # A fractional GPU from Ray on a node where torch sees no CUDA: score on the CPU.
        self._device = select_device(plan.num_gpus > 0)
        self._model: torch.nn.Module | None = None
        self._fast: torch.nn.Module | None = None  # the model, compiled when asked
        self._weights: str | None = None  # the object id of the weights loaded

    def score(self, model_config: dict[str, Any], weights: list, batches: list[np.ndarray],
              seed: int, round: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices, scores) of whole pool batches; MC-dropout masks depend on (seed, round,
        batch) only, so which scorer gets a batch never changes its scores."""
        plan = self._plan
        if self._model is None:
            config = AutoConfig.for_model(**model_config)
            self._model = AutoModelForSequenceClassification.from_config(
                config, attn_implementation=attn_implementation(plan.performance)).to(self._device)
            self._fast = maybe_compile(self._model, plan.performance)  # compiled once, kept
        if self._weights != weights[0].hex():  # once per round, not per shard
            self._model.load_state_dict(ray.get(weights[0]))  # in place: the compiled graph stays valid
            self._weights = weights[0].hex()
        pool = load_encoded(self._pool_file, mmap=True)
        scored = score_batches(self._fast, pool, batches, plan.acquisition, pad_token_id=plan.pad_token_id,
                               mc_samples=plan.mc_samples, seed=seed, round=round, perf=plan.performance)
        release_freed_memory()  # the shard's activations: what stays resident is one shard's worth
        return scored


def shard_batches(lengths: np.ndarray, candidates: np.ndarray, batch_size: int,
                  shard_texts: int = SHARD_TEXTS) -> list[list[np.ndarray]]:
    """Cut the candidates into length-sorted whole batches and group them into shards of about
    ``shard_texts`` texts, in order.

    The batches do not depend on the number of scorers or on which scorer takes a shard, so 1 or
    N scorers compute bitwise the same logits and pick the same set."""
    batches = LengthBucketSampler(lengths, batch_size, indices=candidates, shuffle=False).batches()
    per_shard = max(1, shard_texts // batch_size)
    return [batches[i:i + per_shard] for i in range(0, len(batches), per_shard)]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ActiveLearner:
    """Ray actor around a PoolLearner, persisted under ``state_dir`` after every change."""

    def __init__(self, state_dir: str, learner: dict[str, Any], plan: ScoringPlan, pool_file: str) -> None:
        self._path = ArmDir(Path(state_dir)).state
        self._plan = plan
        # The tokenised pool is read from the run's cache, never passed as one object: a
        # restarted actor (max_restarts=-1) rebuilds itself from files alone, whatever became of
        # the driver that created it, and the scorers read only the shards they score.
        self._pool_file = pool_file
        self._scorers: list = []  # started on first use: the random baseline never needs them
        if self._path.is_file():  # a restart: the persisted state is authoritative
            state = json.loads(self._path.read_text(encoding="utf-8"))
            self._learner = PoolLearner.from_dict(state["learner"])
            self._curve = state["curve"]
        else:
            self._learner = PoolLearner(**learner)
            self._curve = []
            self._persist()

    def _persist(self) -> None:
        atomic_write_json(self._path, {"learner": self._learner.to_dict(), "curve": self._curve})

    def round(self) -> int:
        return self._learner.round

    def labeled_indices(self, round: int | None = None) -> list[int]:
        return self._learner.labeled_indices(round).tolist()

    def acquire(self, round: int, weights: list, model_config: dict[str, Any]) -> list[int]:
        """Run acquisition ``round`` (1-based) with the teacher ``weights`` ([ObjectRef]) and
        return the cumulative labelled indices. A round already done returns its stored picks."""
        if round > self._learner.round:
            candidates = self._learner.unlabeled_indices(round - 1)
            scores = self._score(round, candidates, weights[0], model_config)
            self._learner.query(round, scores, candidates)
            self._persist()
        return self._learner.labeled_indices(round).tolist()

    def _score(self, round: int, candidates: np.ndarray, weights_ref, model_config) -> np.ndarray:
        """Scores of ``candidates``: shards dealt to the scorers as they free up. Only the pool's
        row lengths are read here; the rows themselves are read by the scorers, shard by shard."""
        plan, learner = self._plan, self._learner
        rule = lookup(ACQUISITIONS, plan.acquisition, "acquisition")
        if rule.pool_scores is not None:  # model-free: drawn per pool index, no scorers needed
            return rule.pool_scores(learner.seed, round, learner.pool_size)[candidates]
        lengths = load_encoded(Path(self._pool_file), mmap=True).lengths
        shards = iter(shard_batches(lengths, candidates, plan.batch_size, plan.shard_texts))
        if not self._scorers:
            options = {"num_cpus": plan.num_cpus, "num_gpus": plan.num_gpus}
            self._scorers = [Scorer.options(**options).remote(plan, self._pool_file) for _ in range(plan.scorers)]
        scores = np.full(learner.pool_size, np.nan)
        pending: dict[Any, Any] = {}

        def submit(scorer) -> None:
            shard = next(shards, None)
            if shard is not None:
                pending[scorer.score.remote(model_config, [weights_ref], shard, learner.seed, round)] = scorer

        for scorer in self._scorers * IN_FLIGHT_PER_SCORER:
            submit(scorer)
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            indices, shard_scores = ray.get(done)
            scores[indices] = shard_scores
            submit(pending.pop(done))
        return scores[candidates]

    def record(self, round: int, metrics: dict[str, float]) -> None:
        """Store one learning-curve point (idempotent per round)."""
        self._curve = [p for p in self._curve if p["round"] != round] + [{"round": round, **metrics}]
        self._persist()

    def curve(self) -> list[dict[str, float]]:
        return sorted(self._curve, key=lambda p: p["round"])
