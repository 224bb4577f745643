"""The one inference policy: every cell against the best cell ("hierarchical bootstrap, Holm-corrected").

The table, the prose, the CLI summary and the results page all read the verdict column this
module writes; nothing else in raydistill decides what is significant.

A cell is a (strategy, temperature) pair with one or more seeds; the best cell has the best mean
validation accuracy over its seeds. For every other cell the policy reports the difference in
mean validation accuracy (cell − best), a 95% interval for it and one verdict: ``worse`` when
the interval lies below 0, else ``tied with best``. The interval carries both sources of noise:

- **examples** -- in each resample the validation examples are drawn with replacement, the same
  indices for every cell (paired by example, so the examples the cells share cancel);
- **seeds** -- each cell's seeds are drawn with replacement. With 2-3 seeds that alone is too
  coarse (3 or 10 distinct means, variance (n-1)/n of the unbiased one), and a seed variance
  estimated from 1-2 degrees of freedom is mostly noise, so the seed draw is (a) rescaled to the
  seed variance pooled over all cells, (b) smoothed with a Gaussian kernel of the same width
  (half the variance each), and (c) that pooled variance is itself drawn in each resample --
  observed x df / chi2_df, df the pooled seed degrees of freedom, so an uncertain seed variance
  widens the tails as Student's t does -- before the seed-by-example noise that the example draw
  already carries is taken off (floored at 0). That noise averages N examples and is known
  precisely; only the observed variance is uncertain. (An earlier version subtracted first and
  shrank df by Satterthwaite's rule: when seeds barely differ beyond their example noise, df fell
  to 1 and Cauchy tails made every interval several points wide.)

Choosing the best cell by its observed mean biases every comparison with it (the winner's
curse: the maximum of 13 equal cells sits well above their common mean). The reference
distribution therefore does not compare two fixed cells: it is, in each resample, the largest
standardised gap between any two of the cells still in play, centred so that all of them are
equal -- what the gap "best minus this cell" looks like when every cell is in truth tied.
Holm's step-down runs on it (Westfall and Young's resampling form, which uses the joint
distribution where Holm uses the Bonferroni bound): the cell furthest below the best is tested
first against all cells, each rejected cell leaves the set, the next is tested against the
smaller set, and testing stops at the first cell that is not rejected. A cell's interval uses the
critical value of the step that decided it, so "the interval excludes 0" and "worse" always agree.

Calibration is proven by simulation in tests/platform/report/test_stats.py (13 cells, 2 and 3
seeds, 1,000 examples on which two students agree 90%): with a seed std of 1 point, a false
"worse" in at most 8% of null studies (measured: 7.0% with 2 seeds, 6.8% with 3) and a planted
4-point drop found in at least 80% (measured: 95.2% with 3 seeds); with seeds that barely differ
(0.2 points), 2.2% / 3.0% false alarms and the drop found in 99.8% / 100%.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from raydistill.platform import metrics as M
from raydistill.platform.errors import CheckpointError
from raydistill.platform.report.metrics import correctness
from raydistill.platform.report.trials import VAL_LOGITS, completed

POLICY = "hierarchical bootstrap, Holm-corrected"
ALPHA = 0.05
RESAMPLES = 2000
SEED = 0
KERNEL_SHARE = 0.5  # share of the seed variance drawn from the Gaussian kernel (the smoothing)

BEST = "best"
TIED = "tied with best"
WORSE = "worse"
NOT_TESTED = "not tested"  # only when no cell has two seeds: the seed variance is unknown

# Columns of the per-cell summary (besides strategy and temperature).
N = "n"
VAL_ACC_MEAN = "val_accuracy_mean"
VAL_ACC_STD = "val_accuracy_std"
TRAIN_LOSS_MEAN = "train_loss_mean"
VAL_LOSS_MEAN = "val_loss_mean"
FIDELITY_MEAN = "fidelity_mean"
RETAINED = "retained"  # mean / teacher accuracy
RETAINED_GAIN = "retained_gain"  # (mean - majority) / (teacher - majority)
DIFF = "diff_vs_best"
CI_LOW = "ci_low"
CI_HIGH = "ci_high"
P_ADJ = "p_holm"
VERDICT = "verdict"
CELL = [M.STRATEGY, M.TEMPERATURE]

_CHUNK = 4_000_000  # resample x example indices drawn at a time (bounds memory)


@dataclass(frozen=True)
class Comparison:
    """The policy's answer, one entry per cell in the order given; the best cell has diff 0,
    NaN interval and p, verdict ``best``."""

    best: int
    diff: np.ndarray  # [K] mean accuracy, cell - best
    ci_low: np.ndarray  # [K]
    ci_high: np.ndarray  # [K]
    p_adj: np.ndarray  # [K] step-down (Holm) adjusted p-value
    verdict: list[str]
    examples: int  # validation examples resampled (0: seed level only, no logits)
    seed_df: int  # pooled seed degrees of freedom


def compare_with_best(
    seed_accuracy: Sequence[Sequence[float]],
    correct: Sequence[np.ndarray] | None = None,
    best: int | None = None,
    *,
    alpha: float = ALPHA,
    n_resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Comparison:
    """Every cell against the best one, by the policy in this module's docstring.

    ``seed_accuracy[c]`` holds cell c's validation accuracy per seed. ``correct[c]``, when given,
    is cell c's per-example correctness [n_seeds, N] (the same N examples for every cell, seeds
    in the order of ``seed_accuracy``); then the accuracies are taken from it and the examples
    are resampled too. ``best`` defaults to the cell with the highest mean. Raises ValueError on
    an empty cell or mismatched shapes."""
    accs, cells = _validated(seed_accuracy, correct)
    x = None if cells is None else np.stack([c.mean(axis=0) for c in cells], axis=1)  # [N, K]
    means = np.array([a.mean() for a in accs])
    best = int(np.argmax(means)) if best is None else best
    rng = np.random.default_rng(seed)
    df = sum(len(a) - 1 for a in accs)
    k = len(accs)
    diff = means - means[best]
    nan = np.full(k, np.nan)
    if df == 0 or k == 1:
        verdict = [BEST if c == best else NOT_TESTED for c in range(k)]
        return Comparison(best, diff, nan, nan.copy(), nan.copy(), verdict, 0 if x is None else x.shape[0], df)
    observed, noise = _seed_variance_parts(accs, cells, df)
    # The seed variance itself is uncertain (df degrees of freedom): each resample draws the
    # observed pooled variance from its sampling distribution, then takes the example noise off.
    pooled = np.maximum(observed * df / rng.chisquare(df, size=n_resamples) - noise, 0.0)
    draws = _example_draws(x, means, n_resamples, rng) + _seed_draws(accs, pooled, n_resamples, rng)
    low, high, p_adj, worse = _step_down(means, draws, best, alpha)
    verdict = [BEST if c == best else (WORSE if worse[c] else TIED) for c in range(k)]
    return Comparison(best, diff, low, high, p_adj, verdict, 0 if x is None else x.shape[0], df)


def _validated(seed_accuracy, correct) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    if correct is None:
        accs = [np.asarray(a, dtype=float).ravel() for a in seed_accuracy]
        if not accs or any(len(a) == 0 for a in accs):
            raise ValueError("every cell needs at least one seed")
        return accs, None
    cells = [np.atleast_2d(np.asarray(c, dtype=np.float32)) for c in correct]
    if len(cells) != len(seed_accuracy) or len({c.shape[1] for c in cells}) != 1:
        raise ValueError(f"correctness arrays of shapes {[c.shape for c in cells]} for "
                         f"{len(seed_accuracy)} cells: need one [seeds, N] array per cell, same N")
    return [c.mean(axis=1, dtype=np.float64) for c in cells], cells


def _seed_variance_parts(accs: list[np.ndarray], cells: list[np.ndarray] | None,
                         df: int) -> tuple[float, float]:
    """(observed, noise): one seed's accuracy variance pooled over cells (``df`` degrees of
    freedom), and the part of it that is seed x example noise.

    Two seeds of a cell measured on the same N examples differ by their population accuracies
    AND by the examples on which one is right and the other wrong (seed x example noise, of
    variance sigma2_e / N). The example draw already carries that noise, since it resamples the
    seed-averaged correctness; counting it again in the seed draw made the policy flag a false
    difference in well under 1% of null studies where 5% is nominal. So the seed draw uses
    observed - noise, noise being the within-cell, within-example spread of correctness (each
    seed centred on its own accuracy): known precisely (it averages N examples), while the
    observed variance is uncertain, which the caller draws per resample."""
    observed = sum(((a - a.mean()) ** 2).sum() for a in accs) / df
    if cells is None:
        return observed, 0.0
    noise = 0.0  # sum over cells of (seeds - 1) x the per-example variance across seeds
    for c in cells:
        r = c - c.mean(axis=1, keepdims=True)  # [seeds, N]: each seed minus its accuracy
        noise += ((r - r.mean(axis=0)) ** 2).sum(axis=0).mean()
    return observed, noise / df / cells[0].shape[1]


def _example_draws(x: np.ndarray | None, means: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """[B, K] cell means over resampled examples (the same indices for every cell)."""
    if x is None:
        return np.broadcast_to(means, (n, len(means))).copy()
    n_examples = x.shape[0]
    out = np.empty((n, x.shape[1]))
    step = max(1, _CHUNK // n_examples)
    for start in range(0, n, step):
        b = min(step, n - start)
        idx = rng.integers(0, n_examples, size=(b, n_examples))  # [b, N]
        flat = (idx + n_examples * np.arange(b)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_examples).reshape(b, n_examples)  # [b, N]
        out[start:start + b] = counts.astype(np.float32) @ x / n_examples  # [b, K]
    return out


def _seed_draws(accs: list[np.ndarray], pooled: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """[B, K] seed-level deviations of each cell's mean: resampled seeds rescaled to the
    resample's pooled seed variance (``pooled`` [B]), smoothed by a Gaussian kernel."""
    out = np.empty((n, len(accs)))
    for c, a in enumerate(accs):
        spread = a.std(ddof=1) if len(a) > 1 else 0.0
        kernel = rng.standard_normal(n)
        if spread > 0:
            idx = rng.integers(0, len(a), size=(n, len(a)))
            # the resampled mean's deviation, standardised to unit variance
            resampled = (a[idx].mean(axis=1) - a.mean()) * np.sqrt(len(a) ** 2 / (len(a) - 1)) / spread
            unit = np.sqrt(1 - KERNEL_SHARE) * resampled + np.sqrt(KERNEL_SHARE) * kernel
        else:  # one seed (or identical seeds): nothing to resample, the kernel carries it all
            unit = kernel
        out[:, c] = unit * np.sqrt(pooled / len(a))  # the cell mean's seed SD in this resample
    return out


def _step_down(means: np.ndarray, draws: np.ndarray, best: int, alpha: float):
    """Holm's step-down on the bootstrap's largest standardised gap among the cells still in
    play. Returns (ci_low, ci_high, adjusted p, worse) per cell."""
    k = len(means)
    se = (draws[:, :, None] - draws[:, None, :]).std(axis=0, ddof=1)  # [K, K] SE of each difference
    se = np.where(se > 0, se, np.finfo(float).tiny)
    null = draws - draws.mean(axis=0)  # every cell centred: all tied
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
            stop_crit = crit  # the first cell not rejected ends the rejections (Holm's rule)
        alive[c] = False  # the next cell is tested against the cells not yet tested
        half = (crit if worse[c] else stop_crit) * se[best, c]
        low[c], high[c] = means[c] - means[best] - half, means[c] - means[best] + half
    return low, high, p_adj, worse


def paired_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, *, confidence: float = 0.95,
    n_resamples: int = RESAMPLES, seed: int = SEED,
) -> tuple[float, float, float]:
    """(mean(a - b), ci_low, ci_high): a percentile bootstrap interval over examples, the same
    indices for both (paired). Inputs are per-example correctness [N] of two models on the same
    examples. Raises ValueError on empty or unequal inputs."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"need two equal-length 1-d arrays, got shapes {a.shape} and {b.shape}")
    d = (a - b)[:, None]  # [N, 1]
    draws = _example_draws(d.astype(np.float32), np.array([d.mean()]), n_resamples,
                           np.random.default_rng(seed))[:, 0]
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return float(d.mean()), float(low), float(high)


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


def summarize(
    df: pd.DataFrame, teacher_accuracy: float | None = None, majority_accuracy: float | None = None,
    labels: np.ndarray | None = None, *, n_resamples: int = RESAMPLES, seed: int = SEED,
) -> pd.DataFrame:
    """One row per (strategy, temperature), best mean first, from COMPLETED trials only.

    Columns: n (completed seeds), val accuracy mean and std (ddof=1; NaN for one seed),
    train/val loss means, fidelity mean, retained (mean / teacher val accuracy) and
    retained_gain ((mean - majority) / (teacher - majority)), NaN without those numbers,
    params, layers, and the policy's columns: diff_vs_best, ci_low, ci_high, p_holm, verdict.
    With ``labels`` (the validation labels) and every trial's val_logits.npy the examples are
    resampled too; otherwise the seeds only. ``summary.attrs["examples"]`` says which."""
    done = completed(df)
    cols = [*CELL, N, VAL_ACC_MEAN, VAL_ACC_STD, TRAIN_LOSS_MEAN, VAL_LOSS_MEAN, FIDELITY_MEAN,
            RETAINED, RETAINED_GAIN, M.PARAMS, M.LAYERS, DIFF, CI_LOW, CI_HIGH, P_ADJ, VERDICT]
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
    cells = [numeric[(numeric[M.STRATEGY] == s) & (numeric[M.TEMPERATURE] == t)].sort_values(M.SEED)
             for s, t in zip(summary[M.STRATEGY], summary[M.TEMPERATURE])]
    correct = _cell_correctness(cells, labels)
    result = compare_with_best([c[M.VAL_ACCURACY].to_numpy() for c in cells], correct, best=0,
                               n_resamples=n_resamples, seed=seed)
    summary[DIFF], summary[CI_LOW], summary[CI_HIGH] = result.diff, result.ci_low, result.ci_high
    summary[P_ADJ], summary[VERDICT] = result.p_adj, result.verdict
    summary.attrs.update(examples=result.examples, seed_df=result.seed_df, resamples=n_resamples)
    return summary[cols]


def _cell_correctness(cells: list[pd.DataFrame], labels: np.ndarray | None) -> list[np.ndarray] | None:
    """Per cell, per-example correctness [seeds, N] from each trial's val_logits.npy; None
    unless every trial has one matching ``labels`` (then only the seeds are resampled)."""
    if labels is None:
        return None
    out = []
    for cell in cells:
        rows = []
        for trial_dir in cell["trial_dir"]:
            path = Path(trial_dir) / VAL_LOGITS if isinstance(trial_dir, str) else None
            if path is None or not path.is_file():
                return None
            logits = np.load(path, allow_pickle=False)
            if logits.ndim != 2 or logits.shape[0] != len(labels):
                return None
            rows.append(correctness(logits, labels))
        out.append(np.stack(rows))
    return out
