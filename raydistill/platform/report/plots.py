"""The report's figures (matplotlib, Agg backend, imported only when plotting)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydistill.platform import metrics as M
from raydistill.platform.report import stats as S
from raydistill.platform.report.active_learning import ARM, read_al_curve
from raydistill.platform.report.active_learning import CI_HIGH as AL_HIGH
from raydistill.platform.report.active_learning import CI_LOW as AL_LOW
from raydistill.platform.report.active_learning import DIFF as AL_DIFF
from raydistill.platform.report.stats import VAL_ACC_MEAN, VAL_ACC_STD
from raydistill.platform.rundir import write_atomically

VERDICT_COLOURS = {S.BEST: "#1f77b4", S.WORSE: "#d62728", S.EQUIVALENT: "#2ca02c",
                   S.INCONCLUSIVE: "#7f7f7f", S.NOT_TESTED: "#bbbbbb"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_val_accuracy(summary: pd.DataFrame, path: Path, teacher_accuracy: float | None = None) -> None:
    """Grouped bars: one group per strategy, one bar per temperature, error bars = std."""
    plt = _pyplot()
    strategies = list(dict.fromkeys(summary[M.STRATEGY]))
    temps = sorted(summary[M.TEMPERATURE].unique())
    width = 0.8 / max(len(temps), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(strategies)), 4))
    for j, t in enumerate(temps):
        cell = summary[summary[M.TEMPERATURE] == t].set_index(M.STRATEGY).reindex(strategies)
        x = np.arange(len(strategies)) + (j - (len(temps) - 1) / 2) * width
        ax.bar(x, cell[VAL_ACC_MEAN], width, yerr=cell[VAL_ACC_STD].fillna(0), capsize=3,
               label=f"T={t:g}")
    if teacher_accuracy is not None:
        ax.axhline(teacher_accuracy, color="k", linestyle="--", linewidth=1, label="teacher")
    low = np.nanmin((summary[VAL_ACC_MEAN] - summary[VAL_ACC_STD].fillna(0)).to_numpy())
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.set_xticks(np.arange(len(strategies)), strategies)
    ax.set_ylabel("validation accuracy (mean ± std over seeds)")
    ax.legend()
    _save(fig, path)


def plot_learning_curves(history: pd.DataFrame, path: Path) -> None:
    """Per epoch, one line per strategy (mean over seeds and temperatures): the distillation
    loss, and the validation accuracy at the epochs that were validated (every epoch, or only
    the last with ``student.validate_every_epoch: false``)."""
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((loss_ax, M.TRAIN_LOSS, "training loss (KD)"),
                              (acc_ax, M.VAL_ACCURACY, "validation accuracy")):
        if metric not in history:
            continue
        curves = history.dropna(subset=[M.EPOCH, metric]).groupby([M.STRATEGY, M.EPOCH])[metric].mean()
        for strategy, curve in curves.groupby(level=0):
            ax.plot(curve.index.get_level_values(1), curve.to_numpy(), marker="o", label=strategy)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xticks(sorted(curves.index.get_level_values(1).unique()))
    fig.suptitle("completed trials, mean over seeds and temperatures")
    if acc_ax.lines:
        acc_ax.legend()
    _save(fig, path)


def plot_active_learning(curve: pd.DataFrame | str | Path, path: Path,
                         comparison: pd.DataFrame | None = None) -> None:
    """Validation accuracy against labelled examples, one line per acquisition function.
    ``curve`` is the AL curve frame or the path of ``al/curve.csv``. With a ``comparison``
    (:func:`al_comparison`) holding intervals, a second panel shows main arm − random per
    budget with its 95% paired bootstrap band."""
    if not isinstance(curve, pd.DataFrame):
        curve = read_al_curve(curve)
    plt = _pyplot()
    banded = comparison is not None and comparison[AL_DIFF].notna().any()
    fig, axes = plt.subplots(1, 2 if banded else 1, figsize=(11 if banded else 6, 4), squeeze=False)
    ax = axes[0, 0]
    for acquisition, g in curve.sort_values(M.LABELED_COUNT).groupby(M.ACQUISITION):
        ax.plot(g[M.LABELED_COUNT], g[M.VAL_ACCURACY], marker="o", label=acquisition)
    ax.set_xlabel("labelled examples")
    ax.set_ylabel("teacher validation accuracy")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    if banded:
        _plot_al_band(axes[0, 1], comparison.dropna(subset=[AL_DIFF]))
    _save(fig, path)


def _plot_al_band(ax: Any, comparison: pd.DataFrame) -> None:
    x = comparison[M.LABELED_COUNT].to_numpy()
    ax.fill_between(x, 100 * comparison[AL_LOW], 100 * comparison[AL_HIGH], alpha=0.3, label=f"{S.CONFIDENCE} CI")
    ax.plot(x, 100 * comparison[AL_DIFF], marker="o", label=f"{comparison[ARM].iloc[0]} − random")
    ax.axhline(0, color="k", linewidth=1)
    ax.set_xlabel("labelled examples")
    ax.set_ylabel("accuracy difference (points)")
    ax.legend()


def plot_forest(cells: pd.DataFrame, strategies: pd.DataFrame | None, path: Path, margin: float) -> None:
    """Each strategy's (temperatures pooled) and each cell's difference from the best, in points,
    with its 95% interval, the ±margin band and the verdict's colour."""
    plt = _pyplot()
    rows = []  # (label, diff, low, high, verdict)
    if strategies is not None:
        rows += [(f"{r[M.STRATEGY]} (all T)", r[S.DIFF], r[S.CI_LOW], r[S.CI_HIGH], r[S.VERDICT])
                 for _, r in strategies.iterrows()]
    rows += [(f"{r[M.STRATEGY]} T={r[M.TEMPERATURE]:g}", r[S.DIFF], r[S.CI_LOW], r[S.CI_HIGH], r[S.VERDICT])
             for _, r in cells.iterrows()]
    fig, ax = plt.subplots(figsize=(9.5, 0.32 * len(rows) + 1.4))
    ax.axvspan(-100 * margin, 100 * margin, color="#2ca02c", alpha=0.12, label=f"±{100 * margin:g} point margin")
    ax.axvline(0, color="k", linewidth=1)
    for y, (label, diff, low, high, verdict) in enumerate(rows):
        colour = VERDICT_COLOURS.get(verdict, "k")
        if np.isfinite(low):
            ax.plot([100 * low, 100 * high], [y, y], color=colour, linewidth=2)
        ax.plot(100 * diff, y, "o", color=colour)
    if strategies is not None and len(rows) > len(strategies):
        ax.axhline(len(strategies) - 0.5, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"validation accuracy minus the best, points ({S.CONFIDENCE} interval)")
    for verdict, colour in VERDICT_COLOURS.items():
        if any(r[4] == verdict for r in rows):
            ax.plot([], [], "o-", color=colour, label=verdict)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)  # beside the lines, not on them
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
