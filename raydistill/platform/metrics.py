"""Metrics: their names, and the one evaluation that computes them from logits.

The teacher's rounds, the students' epochs, both exports, the report, the results API and Serve
all call :func:`evaluate` and use these names, so a number means the same everywhere. Train and
Tune report validation metrics under ``val_`` names (:func:`reported`); the learning curve and
``results.csv`` keep those columns.

Accuracy, loss and fidelity are computed in float32 by torch (imported only here, when a metric
is computed, so reading Tune's files does not pay for it); the calibration metrics in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raydistill.platform.errors import CheckpointError, DataError

# What evaluate() returns
ACCURACY = "accuracy"
LOSS = "loss"  # mean cross-entropy
MACRO_F1 = "macro_f1"
ECE = "ece"
FIDELITY = "fidelity"  # agreement of the top label with the teacher's
ECE_BINS = 15

# What Train and Tune report (and the curve and results.csv keep)
TRAIN_LOSS = "train_loss"
VAL_LOSS = "val_loss"
VAL_ACCURACY = "val_accuracy"
EPOCH = "epoch"
ROUND = "round"
LABELED_COUNT = "labeled_count"
PARAMS = "params"
LAYERS = "layers"
NUM_LAYERS = "num_layers"  # a frontier trial's student depth
STRATEGY = "strategy"
TEMPERATURE = "temperature"
SEED = "seed"
ALPHA = "alpha"
LR = "lr"
LOSS_CE = "loss/ce"
LOSS_KD = "loss/kd"
LOSS_HIDDEN = "loss/hidden"
ACQUISITION = "acquisition"
TEST_ACCURACY = "test_accuracy"
BEST_VAL_ACCURACY = "best_val_accuracy"
# Tune's own keys in every result.json line (the report reads them from disk, not through Ray).
TRIAL_ID = "trial_id"
TRAINING_ITERATION = "training_iteration"
DONE = "done"
TIME_TOTAL_S = "time_total_s"

_REPORTED = {ACCURACY: VAL_ACCURACY, LOSS: VAL_LOSS, FIDELITY: FIDELITY}


def reported(metrics: dict[str, float]) -> dict[str, float]:
    """The validation metrics Train and Tune report, under their ``val_`` names."""
    return {name: metrics[key] for key, name in _REPORTED.items() if key in metrics}


def softmax(logits: Any) -> np.ndarray:
    """Row-wise softmax in float64 (shifted by the row maximum, so large logits cannot overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def evaluate(logits: Any, labels: Any, teacher_logits: Any = None) -> dict[str, float]:
    """accuracy, loss, macro-F1 and ECE of ``logits`` [N, C] against integer ``labels`` [N], and
    with ``teacher_logits`` [N, C] the fidelity. Raises CheckpointError when the shapes do not
    match, DataError when there are no examples."""
    import torch

    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise CheckpointError(f"logits of shape {logits.shape} do not match {labels.shape[0]} labels")
    if labels.shape[0] == 0:
        raise DataError("metrics of zero examples are undefined")
    z = torch.from_numpy(np.array(logits, dtype=np.float32))  # [N, C], a copy: inputs may be read-only maps
    y = torch.from_numpy(np.array(labels, dtype=np.int64))
    predictions = z.argmax(dim=-1)
    out = {ACCURACY: (predictions == y).float().mean().item(),
           LOSS: torch.nn.functional.cross_entropy(z, y).item()}
    probs = softmax(logits)
    out[MACRO_F1] = macro_f1(predictions.numpy(), labels)
    out[ECE] = expected_calibration_error(probs, labels)
    if teacher_logits is not None:
        t = torch.as_tensor(np.asarray(teacher_logits)).argmax(dim=-1)
        out[FIDELITY] = (predictions == t).float().mean().item()
    return out


def over_seeds(evaluations: list[dict[str, float]], name: str) -> tuple[float, float]:
    """Mean and sample SD (0 for one seed) of metric ``name`` over a cell's seeds: what the
    exported card and the report's test table give as mean ± std."""
    values = np.array([e[name] for e in evaluations], dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


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


def correctness(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example correctness [N] (bool) of ``logits`` [N, C]: what the bootstrap resamples."""
    return np.asarray(logits).argmax(axis=1) == np.asarray(labels)
