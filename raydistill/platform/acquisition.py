"""Acquisition functions: class probabilities -> informativeness (higher = ask for its label).

Pure numpy in float64 over per-example rows, so a shard scored alone gets the same numbers it
gets inside the whole pool; :func:`select_top_k` rounds before ranking and breaks ties by
index, so 1 or N scorers pick the same set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from raydistill.platform.errors import PoolExhaustedError, RaydistillError
from raydistill.platform.layers import lookup
from raydistill.platform.models import autocast_context, model_inputs


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
    draws its baseline pool-wide with ``PoolLearner.random_scores`` instead."""
    return np.random.default_rng(seed).random(len(probs))


def bald_scores(prob_samples: np.ndarray | torch.Tensor, seed: int = 0) -> np.ndarray:
    """Mutual information between prediction and weights from MC-dropout samples [S, N, C]:
    H(mean_s p_s) - mean_s H(p_s), high where the samples disagree (Houlsby et al., 2011)."""
    samples = _as_float64(prob_samples)
    if samples.ndim != 3:
        raise RaydistillError(f"bald needs probability samples [S, N, C], got shape {samples.shape}")
    return _entropy(samples.mean(axis=0)) - _entropy(samples).mean(axis=0)


@dataclass(frozen=True)
class Acquisition:
    """A scoring rule; ``mc_dropout`` ones take samples [S, N, C] from :func:`mc_dropout_probs`."""

    score: Callable[[np.ndarray, int], np.ndarray]
    mc_dropout: bool = False


ACQUISITIONS: Mapping[str, Acquisition] = {
    "entropy": Acquisition(entropy_scores),
    "margin": Acquisition(margin_scores),
    "least_confidence": Acquisition(least_confidence_scores),
    "random": Acquisition(random_scores),
    "bald": Acquisition(bald_scores, mc_dropout=True),
}


def _as_float64(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


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
    return score_probs(name, _softmax(_as_float64(logits)), seed)


def mc_dropout_probs(
    model: torch.nn.Module, batch: Mapping[str, torch.Tensor], n_samples: int
) -> torch.Tensor:
    """float32 probabilities [S, B, C] on CPU from ``n_samples`` forward passes with dropout on.

    The model's previous train/eval mode is restored.
    """
    device = next(model.parameters()).device
    inputs = model_inputs(batch, device)
    was_training = model.training
    model.train()  # dropout on: each pass samples a different sub-network
    try:
        with torch.inference_mode(), autocast_context(device):
            samples = [model(**inputs).logits.float().softmax(dim=-1) for _ in range(n_samples)]
    finally:
        model.train(was_training)
    return torch.stack(samples).cpu()


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
