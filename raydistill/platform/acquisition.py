"""Acquisition functions: class probabilities -> informativeness (higher = ask for its label).

Pure numpy in float64 over per-example rows, so a shard scored alone gets the same numbers it
gets inside the whole pool; :func:`select_top_k` rounds before ranking and breaks ties by
index, so 1 or N scorers pick the same set. :func:`score_batches` scores whole pool batches
with a model; MC-dropout masks are seeded per batch (:func:`batch_seed`), never by whoever
scores it or what it scored before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from raydistill.platform.errors import PoolExhaustedError, RaydistillError
from raydistill.platform.fastpath import PerfLike, autocast_context
from raydistill.platform.metrics import softmax
from raydistill.platform.layers import lookup
from raydistill.platform.models import model_inputs
from raydistill.platform.text import Encoded, EncodedDataset, collate


def _entropy(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) over the last axis; 0 * log 0 counts as 0."""
    return -(probs * np.log(np.clip(probs, np.finfo(np.float64).tiny, None))).sum(axis=-1)


def entropy_scores(probs: np.ndarray, seed: int = 0) -> np.ndarray:
    return _entropy(probs)


def margin_scores(probs: np.ndarray, seed: int = 0) -> np.ndarray:
    """1 - (p1 - p2): the closer the top two classes, the higher."""
    top2 = np.sort(probs, axis=-1)[:, -2:]  # (N, 2)
    return 1.0 - (top2[:, 1] - top2[:, 0])


def least_confidence_scores(probs: np.ndarray, seed: int = 0) -> np.ndarray:
    return 1.0 - probs.max(axis=-1)


def random_scores(probs: np.ndarray, seed: int = 0) -> np.ndarray:
    """Uniform in [0, 1), reproducible from ``seed``: the baseline every method must beat.

    Depends on row position, so shards would differ from the whole pool: the active learner
    draws its baseline pool-wide with :func:`random_pool_scores` instead."""
    return np.random.default_rng(seed).random(len(probs))


def random_pool_scores(seed: int, round: int, pool_size: int) -> np.ndarray:
    """The random baseline for every pool index (pool_size,), seeded by (seed, round): a pool
    index gets its score whatever the candidates' order or sharding."""
    return np.random.default_rng([seed, round]).random(pool_size)


def bald_scores(prob_samples: np.ndarray | torch.Tensor, seed: int = 0) -> np.ndarray:
    """Mutual information between prediction and weights from MC-dropout samples [S, N, C]:
    H(mean_s p_s) - mean_s H(p_s), high where the samples disagree (Houlsby et al., 2011)."""
    samples = _as_float64(prob_samples)
    if samples.ndim != 3:
        raise RaydistillError(f"bald needs probability samples [S, N, C], got shape {samples.shape}")
    return _entropy(samples.mean(axis=0)) - _entropy(samples).mean(axis=0)


@dataclass(frozen=True)
class Acquisition:
    """A scoring rule; ``mc_dropout`` ones take samples [S, N, C] from :func:`mc_dropout_probs`.
    A rule with ``pool_scores`` ignores the model: (seed, round, pool_size) -> a score per pool
    index, drawn once for the whole pool instead of per scored batch."""

    score: Callable[[np.ndarray, int], np.ndarray]
    mc_dropout: bool = False
    pool_scores: Callable[[int, int, int], np.ndarray] | None = None

    @property
    def needs_model(self) -> bool:
        """Whether the rule scores the pool with the model (and so needs the scorer actors)."""
        return self.pool_scores is None


ACQUISITIONS: Mapping[str, Acquisition] = {
    "entropy": Acquisition(entropy_scores),
    "margin": Acquisition(margin_scores),
    "least_confidence": Acquisition(least_confidence_scores),
    "random": Acquisition(random_scores, pool_scores=random_pool_scores),
    "bald": Acquisition(bald_scores, mc_dropout=True),
}


def _as_float64(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def score_probs(name: str, probs: np.ndarray | torch.Tensor, seed: int = 0) -> np.ndarray:
    """Scores (N,) from probabilities (N, C), or from samples (S, N, C) for MC-dropout rules."""
    rule = lookup(ACQUISITIONS, name, "acquisition")
    probs = _as_float64(probs)
    expected = 3 if rule.mc_dropout else 2
    if probs.ndim != expected:
        raise RaydistillError(
            f"acquisition {name!r} takes a {expected}-d array "
            f"({'[S, N, C] MC-dropout samples' if rule.mc_dropout else '[N, C]'}), got shape {probs.shape}"
        )
    return rule.score(probs, seed)


def score_logits(name: str, logits: np.ndarray | torch.Tensor, seed: int = 0) -> np.ndarray:
    """Scores (N,) from logits (N, C); for ``bald`` logits of MC-dropout samples (S, N, C)."""
    return score_probs(name, softmax(_as_float64(logits)), seed)


def batch_seed(seed: int, round: int, batch_indices: Sequence[int]) -> int:
    """The MC-dropout seed of one scoring batch: a function of the run's seed, the round and the
    batch's identity (its first pool index) only — not of the scorer or its earlier batches."""
    entropy = [int(seed), int(round), int(batch_indices[0])]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def mc_dropout_probs(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor], n_samples: int, seed: int,
    perf: PerfLike = None,
) -> torch.Tensor:
    """float32 probabilities [S, B, C] on CPU from ``n_samples`` forward passes with dropout on.

    The dropout masks come from ``seed`` alone (the same seed and batch give the same samples);
    the global RNG state is saved and restored around them, and so is the model's train/eval mode.
    ``perf``: the fast paths (autocast, copies) of :mod:`raydistill.platform.fastpath`.
    """
    device = next(model.parameters()).device
    inputs = model_inputs(batch, device, perf)
    # Dropout draws from the default generator of the model's device (it takes no generator).
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    was_training = model.training
    model.train()  # dropout on: each pass samples a different sub-network
    try:
        with torch.random.fork_rng(devices=cuda), torch.inference_mode(), autocast_context(device, perf):
            torch.default_generator.manual_seed(seed)
            for index in cuda:
                with torch.cuda.device(index):
                    torch.cuda.manual_seed(seed)
            samples = [model(**inputs).logits.float().softmax(dim=-1) for _ in range(n_samples)]
    finally:
        model.train(was_training)
    return torch.stack(samples).cpu()


def score_batches(
    model: torch.nn.Module,
    pool: Encoded,
    batches: Sequence[Sequence[int]],
    acquisition: str,
    *,
    pad_token_id: int,
    mc_samples: int,
    seed: int,
    round: int,
    perf: PerfLike = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Score whole batches of pool indices with ``model``: (indices, scores), both (N,).

    A batch's scores depend only on its members, the weights, and for MC-dropout rules on
    :func:`batch_seed` (seed, round, batch): scoring batches in any order or grouping, on 1 or N
    scorers, gives each example the same score. Raises RaydistillError for a rule that scores
    the pool without a model (``pool_scores``), ConfigError for an unknown name. ``perf``: the
    fast paths (autocast, pinned copies) of :mod:`raydistill.platform.fastpath`; batches are
    padded to their longest member (the scorers' batches come length-sorted).
    """
    rule = lookup(ACQUISITIONS, acquisition, "acquisition")
    if rule.pool_scores is not None:
        raise RaydistillError(f"acquisition {acquisition!r} ignores the model: use its pool_scores")
    device = next(model.parameters()).device
    rows = EncodedDataset(pool)  # reads only the rows asked for: the pool may be memory-mapped
    indices, scores = [], []
    for batch_indices in batches:
        batch = collate([rows[int(i)] for i in batch_indices], pad_token_id)
        if rule.mc_dropout:
            probs = mc_dropout_probs(model, batch, mc_samples, batch_seed(seed, round, batch_indices), perf)
            scores.append(score_probs(acquisition, probs, seed))
        else:
            scores.append(score_logits(acquisition, _eval_logits(model, batch, device, perf), seed))
        indices.extend(batch_indices)
    return np.asarray(indices, dtype=np.int64), np.concatenate(scores) if scores else np.zeros(0)


def _eval_logits(model: torch.nn.Module, batch: Mapping[str, torch.Tensor], device: torch.device,
                 perf: PerfLike = None) -> torch.Tensor:
    """float32 logits (B, C) on CPU in eval mode; the model's previous mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast_context(device, perf):
            return model(**model_inputs(batch, device, perf)).logits.float().cpu()
    finally:
        model.train(was_training)


def select_top_k(scores: np.ndarray, candidates: np.ndarray, k: int, decimals: int = 5) -> np.ndarray:
    """The ``k`` candidates with the highest scores, best first.

    Scores are rounded to ``decimals`` first, so float noise between a sharded and an
    unsharded scoring cannot reorder them; equal scores go to the smaller candidate index.
    Raises PoolExhaustedError when k exceeds the candidates, RaydistillError on bad scores.
    """
    scores, candidates = np.asarray(scores, dtype=np.float64), np.asarray(candidates)
    if scores.shape != candidates.shape or scores.ndim != 1:
        raise RaydistillError(f"scores {scores.shape} and candidates {candidates.shape} must be equal 1-d")
    if k > len(candidates):
        raise PoolExhaustedError(f"asked for {k} examples, only {len(candidates)} candidates are left")
    if np.isnan(scores).any():
        raise RaydistillError(f"{int(np.isnan(scores).sum())} acquisition scores are NaN")
    order = np.lexsort((candidates, -np.round(scores, decimals)))  # last key sorts first
    return candidates[order[:k]]
