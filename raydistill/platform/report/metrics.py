"""Classification metrics from saved logits: accuracy, per-class and macro F1, ECE.

Accuracy is :func:`raydistill.platform.models.accuracy` and the softmax is torch's: one of
each in the project. ``models`` (and so transformers) is imported only when a metric is
computed, so reading Tune's files does not pay for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raydistill.platform import metrics as M
from raydistill.platform.errors import CheckpointError

ECE_BINS = 15


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
    """accuracy, macro-F1 and ECE of ``logits`` [N, C] against integer ``labels`` [N].
    Raises CheckpointError when the shapes do not match."""
    import torch

    from raydistill.platform.models import accuracy

    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise CheckpointError(f"logits of shape {logits.shape} do not match {labels.shape[0]} labels")
    z = torch.as_tensor(logits, dtype=torch.float64)  # [N, C]
    probs = z.softmax(dim=-1).numpy()
    return {M.ACCURACY: accuracy(z, torch.as_tensor(labels)),
            M.MACRO_F1: macro_f1(probs.argmax(axis=1), labels),
            M.ECE: expected_calibration_error(probs, labels, n_bins)}


def correctness(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example correctness [N] (bool) of ``logits`` [N, C]: what the bootstrap resamples."""
    return np.asarray(logits).argmax(axis=1) == np.asarray(labels)
