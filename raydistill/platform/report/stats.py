"""The one inference policy: every cell (and every strategy) against the best, three verdicts.

The table, the prose, the CLI summary, ``raydistill.results`` and the results page all read the
verdict column this module writes; nothing else in raydistill decides what is significant.

A cell is a (strategy, temperature) pair with one or more seeds; the best cell has the best mean
validation accuracy over its seeds. For every other cell the policy reports the difference in
mean accuracy (cell − best), a 95% interval for it and one of three verdicts at a declared
margin (``report.margin``, 1 point by default):

- ``worse`` -- the interval lies below 0;
- ``equivalent`` -- the interval lies inside ±margin (two one-sided tests: the interval is a
  simultaneous 95% one, at least as wide as the 90% one TOST needs, so the claim is conservative);
- ``inconclusive`` -- neither: the data cannot tell.

The interval carries both sources of noise, from one bootstrap that all cells share
(:mod:`raydistill.platform.report.bootstrap`: clusters of examples, and each cell's own moderated
seed variance).

Choosing the best cell by its observed mean biases every comparison with it (the winner's curse).
The reference distribution is therefore, in each resample, the largest standardised gap between
any two of the cells still in play, centred so that all are equal. Holm's step-down runs on it
(Westfall and Young's resampling form): the cell furthest below the best is tested first against
all cells, each rejected cell leaves the set, testing stops at the first cell not rejected. A
cell's interval uses the critical value of the step that decided it, so "the interval lies below 0"
and ``worse`` always agree.

The same draws answer the layer question per strategy (a strategy's cells averaged over the
temperatures: :func:`Draws.combine`), the temperature's own effect and a strategy x temperature
interaction check. Calibration is proven by simulation at production settings in
``tests/platform/report/test_calibration.py`` (the rates and their Monte Carlo SE are in the
test output and ``docs/statistics.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from raydistill.platform import metrics as M
from raydistill.platform.errors import CheckpointError
from raydistill.platform.metrics import correctness
from raydistill.platform.report.bootstrap import (
    RESAMPLES,
    ROWS,
    SEED,
    Draws,
    _validated,
    bootstrap,
)
from raydistill.platform.report.trials import completed
from raydistill.platform.rundir import VAL_LOGITS

POLICY = "cluster bootstrap, moderated per-cell seed variance, Holm step-down"
ALPHA = 0.05
CONFIDENCE = f"{1 - ALPHA:.0%}"  # "95%": how the intervals are labelled
MARGIN = 0.01  # report.margin's default (1 point), as a fraction

BEST = "best"
WORSE = "worse"
EQUIVALENT = "equivalent"
INCONCLUSIVE = "inconclusive"
NOT_TESTED = "not tested"  # only when no cell has two seeds: the seed variance is unknown
VERDICTS = (BEST, WORSE, EQUIVALENT, INCONCLUSIVE, NOT_TESTED)

# Columns of the per-cell summary (besides strategy and temperature).
N = "n"
VAL_ACC_MEAN = "val_accuracy_mean"
VAL_ACC_STD = "val_accuracy_std"
TRAIN_LOSS_MEAN = "train_loss_mean"
VAL_LOSS_MEAN = "val_loss_mean"
FIDELITY_MEAN = "fidelity_mean"
RETAINED = "retained"  # mean / teacher accuracy
RETAINED_GAIN = "retained_gain"  # (mean - majority) / (teacher - majority)
SEED_SD = "seed_sd"  # the moderated seed SD the policy used for the cell
DIFF = "diff_vs_best"
CI_LOW = "ci_low"
CI_HIGH = "ci_high"
P_ADJ = "p_holm"
VERDICT = "verdict"
CELL = [M.STRATEGY, M.TEMPERATURE]


@dataclass(frozen=True)
class Comparison:
    """The policy's answer, one entry per unit in the order given; the best has diff 0, NaN
    interval and p, verdict ``best``."""

    best: int
    diff: np.ndarray  # [K] mean accuracy, unit - best
    ci_low: np.ndarray  # [K]
    ci_high: np.ndarray  # [K]
    p_adj: np.ndarray  # [K] step-down (Holm) adjusted p-value of "worse"
    verdict: list[str]
    draws: Draws | None  # None when nothing could be tested

    @property
    def examples(self) -> int:
        return 0 if self.draws is None else self.draws.examples

    @property
    def seed_df(self) -> int:
        return 0 if self.draws is None else self.draws.seed_df


def compare_with_best(
    seed_accuracy: Sequence[Sequence[float]],
    correct: Sequence[np.ndarray] | None = None,
    best: int | None = None,
    *,
    groups: np.ndarray | None = None,
    unit: str = ROWS,
    margin: float = MARGIN,
    alpha: float = ALPHA,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Comparison:
    """Every cell against the best one, by the policy in this module's docstring.

    ``seed_accuracy[c]`` holds cell c's accuracy per seed. ``correct[c]``, when given, is cell
    c's per-example correctness [n_seeds, N] (the same N examples for every cell); then the
    accuracies come from it and the examples are resampled too, by ``groups`` [N] (a cluster id
    per example, named ``unit``) or by row. ``best`` defaults to the cell with the highest mean.
    Raises ValueError on an empty cell or mismatched shapes."""
    accs, cells = _validated(seed_accuracy, correct)
    draws = bootstrap(accs, cells, groups, unit=unit, n_resamples=n_resamples, seed=seed)
    return compare_draws(draws, best, means=np.array([a.mean() for a in accs]), margin=margin, alpha=alpha)


def compare_draws(draws: Draws | None, best: int | None = None, *, means: np.ndarray | None = None,
                  margin: float = MARGIN, alpha: float = ALPHA) -> Comparison:
    """The step-down and the three verdicts on draws already made (cells, or strategies from
    :meth:`Draws.combine`). ``draws`` None (no seed variance anywhere) gives ``not tested``."""
    m = draws.means if draws is not None else np.asarray(means, dtype=float)
    best = int(np.argmax(m)) if best is None else best
    k = len(m)
    diff = m - m[best]
    nan = np.full(k, np.nan)
    if draws is None or k == 1:
        verdict = [BEST if c == best else NOT_TESTED for c in range(k)]
        return Comparison(best, diff, nan, nan.copy(), nan.copy(), verdict, draws)
    low, high, p_adj, worse = _step_down(m, draws.draws, best, alpha)
    verdict = [verdict_of(c == best, worse[c], low[c], high[c], margin) for c in range(k)]
    return Comparison(best, diff, low, high, p_adj, verdict, draws)


def verdict_of(is_best: bool, worse: bool, low: float, high: float, margin: float) -> str:
    """The three verdicts from one interval: worse below 0, equivalent inside ±margin."""
    if is_best:
        return BEST
    if worse:
        return WORSE
    return EQUIVALENT if -margin < low and high < margin else INCONCLUSIVE


def _step_down(means: np.ndarray, draws: np.ndarray, best: int, alpha: float):
    """Holm's step-down on the bootstrap's largest standardised gap among the units still in
    play. Returns (ci_low, ci_high, adjusted p, worse) per unit."""
    k = len(means)
    se = (draws[:, :, None] - draws[:, None, :]).std(axis=0, ddof=1)  # [K, K] SE of each difference
    se = np.where(se > 0, se, np.finfo(float).tiny)
    null = draws - draws.mean(axis=0)  # every unit centred: all tied
    gap = (means[best] - means) / se[best]  # [K] how far below the best, in its SE
    order = [c for c in np.argsort(-gap, kind="stable") if c != best]
    alive = np.ones(k, bool)
    low, high, p_adj = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
    worse = np.zeros(k, bool)
    # p < alpha exactly when the gap exceeds the (j+1)-th largest resampled gap: the same rule
    # gives the verdict, the adjusted p-value and the interval, so they cannot disagree.
    j = max(int(np.ceil(alpha * (len(draws) + 1) - 1)) - 1, 0)
    running_p, stop_crit = 0.0, None
    for c in order:
        sub = null[:, alive]
        widest = ((sub[:, :, None] - sub[:, None, :]) / se[np.ix_(alive, alive)]).max(axis=(1, 2))  # [B]
        crit = float(np.sort(widest)[::-1][j])
        running_p = max(running_p, (1 + np.sum(widest >= gap[c])) / (1 + len(widest)))
        p_adj[c] = running_p
        if stop_crit is None and gap[c] > crit:
            worse[c] = True
        elif stop_crit is None:
            stop_crit = crit  # the first unit not rejected ends the rejections (Holm's rule)
        alive[c] = False  # the next unit is tested against the units not yet tested
        half = (crit if worse[c] else stop_crit) * se[best, c]
        low[c], high[c] = means[c] - means[best] - half, means[c] - means[best] + half
    return low, high, p_adj, worse


def contrast(draws: Draws, weights: np.ndarray, *, alpha: float = ALPHA) -> tuple[float, float, float]:
    """(estimate, ci_low, ci_high) of one linear contrast of the units' means (weights [K]),
    a basic bootstrap interval from the joint draws: no multiplicity, one planned question."""
    w = np.asarray(weights, dtype=float)
    est = float(draws.means @ w)
    spread = draws.draws @ w - (draws.draws @ w).mean()
    lo, hi = np.quantile(spread, [alpha / 2, 1 - alpha / 2])
    return est, est - float(hi), est - float(lo)


def interaction_p(draws: Draws, table: np.ndarray) -> float:
    """p-value of a strategy x temperature interaction: ``table`` [S, T] holds the cell index
    of each (strategy, temperature), -1 where missing (those strategies are left out). The
    statistic is the largest standardised interaction residual (cell − its strategy's mean −
    its temperature's mean + the grand mean); its reference is the same on centred draws."""
    rows = table[(table >= 0).all(axis=1)]
    if rows.shape[0] < 2 or rows.shape[1] < 2:
        return float("nan")

    def residuals(x: np.ndarray) -> np.ndarray:  # x [..., K] -> [..., S*T]
        m = x[..., rows]  # [..., S, T]
        r = m - m.mean(-1, keepdims=True) - m.mean(-2, keepdims=True) + m.mean((-2, -1), keepdims=True)
        return r.reshape(*r.shape[:-2], -1)

    null = residuals(draws.draws - draws.draws.mean(axis=0))  # [B, S*T]
    se = np.where(null.std(axis=0, ddof=1) > 0, null.std(axis=0, ddof=1), np.finfo(float).tiny)
    observed = np.abs(residuals(draws.means) / se).max()
    reference = np.abs(null / se).max(axis=1)
    return float((1 + np.sum(reference >= observed)) / (1 + len(reference)))


# ---------------------------------------------------------------------------------------------
# The policy applied to a sweep's results


def _ranked(summary: pd.DataFrame) -> pd.DataFrame:
    """Best first: highest mean val accuracy, then more seeds, then strategy name, then T."""
    key = summary.assign(_mean=-summary[VAL_ACC_MEAN].round(12), _n=-summary[N])
    return summary.loc[key.sort_values(["_mean", "_n", M.STRATEGY, M.TEMPERATURE],
                                       kind="stable").index]


def choose_winner(summary: pd.DataFrame) -> tuple[str, float]:
    """The (strategy, temperature) with the best MEAN validation accuracy over seeds: the cell
    whose best-validation seed is exported. Whether it is better than the others is the verdict
    column's business (see :func:`raydistill.platform.report.render.verdict_sentence`).

    Ties go to the cell with more completed seeds, then to the alphabetically first strategy,
    then the lower temperature. Raises CheckpointError when no cell has a completed trial."""
    if summary.empty:
        raise CheckpointError("no completed student trial: there is no winner to choose")
    best = _ranked(summary).iloc[0]
    return str(best[M.STRATEGY]), float(best[M.TEMPERATURE])


@dataclass(frozen=True)
class Evidence:
    """What the policy resamples on one split: the per-example labels and, optionally, the
    cluster of each example and what a cluster is called."""

    labels: np.ndarray
    groups: np.ndarray | None = None
    unit: str = ROWS
    logits_file: str = VAL_LOGITS  # each trial's logits on this split


def summarize(
    df: pd.DataFrame, teacher_accuracy: float | None = None, majority_accuracy: float | None = None,
    labels: np.ndarray | Evidence | None = None, *, margin: float = MARGIN,
    n_resamples: int = RESAMPLES, seed: int = SEED,
) -> pd.DataFrame:
    """One row per (strategy, temperature), best mean first, from COMPLETED trials only.

    Columns: n (completed seeds), val accuracy mean and std (ddof=1; NaN for one seed),
    train/val loss means, fidelity mean, retained (mean / teacher val accuracy) and
    retained_gain ((mean - majority) / (teacher - majority)), NaN without those numbers,
    params, layers, the moderated seed SD and the policy's columns: diff_vs_best, ci_low,
    ci_high, p_holm, verdict. With ``labels`` (validation labels, or an :class:`Evidence` with
    the clusters) and every trial's val_logits.npy the examples are resampled too; otherwise the
    seeds only. ``summary.attrs`` holds the draws and how they were made."""
    done = completed(df)
    cols = [*CELL, N, VAL_ACC_MEAN, VAL_ACC_STD, TRAIN_LOSS_MEAN, VAL_LOSS_MEAN, FIDELITY_MEAN,
            RETAINED, RETAINED_GAIN, M.PARAMS, M.LAYERS, SEED_SD, DIFF, CI_LOW, CI_HIGH, P_ADJ, VERDICT]
    if done.empty:
        return pd.DataFrame(columns=cols)
    numeric = done.assign(**{c: pd.to_numeric(done[c], errors="coerce")
                             for c in (M.VAL_ACCURACY, M.TRAIN_LOSS, M.VAL_LOSS, M.FIDELITY, M.PARAMS)})
    summary = numeric.groupby(CELL, sort=True, dropna=False).agg(**{
        N: (M.VAL_ACCURACY, "count"),
        VAL_ACC_MEAN: (M.VAL_ACCURACY, "mean"),
        VAL_ACC_STD: (M.VAL_ACCURACY, "std"),
        TRAIN_LOSS_MEAN: (M.TRAIN_LOSS, "mean"),
        VAL_LOSS_MEAN: (M.VAL_LOSS, "mean"),
        FIDELITY_MEAN: (M.FIDELITY, "mean"),
        M.PARAMS: (M.PARAMS, "median"),
        M.LAYERS: (M.LAYERS, "first"),
    }).reset_index()
    summary[RETAINED] = summary[VAL_ACC_MEAN] / teacher_accuracy if teacher_accuracy else np.nan
    gain = None if teacher_accuracy is None or majority_accuracy is None else teacher_accuracy - majority_accuracy
    summary[RETAINED_GAIN] = (summary[VAL_ACC_MEAN] - majority_accuracy) / gain if gain else np.nan
    summary = _ranked(summary).reset_index(drop=True)
    cells = cell_trials(numeric, summary)
    evidence = labels if isinstance(labels, Evidence) or labels is None else Evidence(np.asarray(labels))
    correct = cell_correctness(cells, evidence)
    accs = [c[M.VAL_ACCURACY].to_numpy() for c in cells]
    if correct is not None:  # the accuracies the resampling sees: from the logits
        accs = [x.mean(axis=1, dtype=np.float64) for x in correct]
    draws = bootstrap(accs, correct, None if correct is None else evidence.groups,
                      unit=evidence.unit if evidence else ROWS, n_resamples=n_resamples, seed=seed)
    result = compare_draws(draws, 0, means=np.array([a.mean() for a in accs]), margin=margin)
    summary[SEED_SD] = np.nan if draws is None else draws.seed_sd
    summary[DIFF] = result.diff
    summary[CI_LOW], summary[CI_HIGH] = result.ci_low, result.ci_high
    summary[P_ADJ], summary[VERDICT] = result.p_adj, result.verdict
    summary.attrs.update(draws=draws, margin=margin, resamples=n_resamples,
                         examples=result.examples, seed_df=result.seed_df)
    return summary[cols]


def cell_trials(trials: pd.DataFrame, summary: pd.DataFrame) -> list[pd.DataFrame]:
    """Each summary row's completed trials, seeds in order."""
    return [trials[(trials[M.STRATEGY] == s) & (trials[M.TEMPERATURE] == t)].sort_values(M.SEED)
            for s, t in zip(summary[M.STRATEGY], summary[M.TEMPERATURE])]


def cell_correctness(cells: list[pd.DataFrame], evidence: Evidence | None,
                     keep: np.ndarray | None = None) -> list[np.ndarray] | None:
    """Per cell, per-example correctness [seeds, N] from each trial's logits file; None unless
    every trial has one matching the labels (then only the seeds are resampled). ``keep``: a
    boolean mask of the examples to use (the confirmation set)."""
    if evidence is None:
        return None
    out = []
    for cell in cells:
        rows = []
        for trial_dir in cell["trial_dir"]:
            path = Path(trial_dir) / evidence.logits_file if isinstance(trial_dir, str) else None
            if path is None or not path.is_file():
                return None
            logits = np.load(path, allow_pickle=False)
            if logits.ndim != 2 or logits.shape[0] != len(evidence.labels):
                return None
            rows.append(correctness(logits, evidence.labels))
        x = np.stack(rows)
        out.append(x if keep is None else x[:, keep])
    return out
