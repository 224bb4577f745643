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

The interval carries both sources of noise, from one bootstrap that all cells share:

- **examples, by cluster** -- examples are not independent (the embedded sentences come ~21 to a
  film, labels correlated within it), so the resampled unit is the cluster (films for the embedded
  data, ``data.group_column`` for a user's, else rows): the same clusters for every cell, so what
  the cells share cancels (paired). The seed-averaged correctness is resampled, which carries the
  seed x example noise of each cell too.
- **seeds, each cell its own** -- a cell's seed variance is its own, moderated toward the other
  cells' by empirical Bayes (limma's ``squeezeVar``: a scaled-inverse-chi2 prior whose degrees of
  freedom are estimated from the spread of the cells' variances, so cells that truly differ keep
  their own and cells that do not borrow strength). In each resample a cell's seed variance is
  drawn from its posterior (t-like tails for an uncertain variance), the seed x example noise
  the example draw already carries is taken off (floored at 0), and the cell's mean moves by a
  normal deviate of that variance / its seeds. ``random``'s seeds also draw its layers, so its
  noise differs by design: it gets its own.

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
from scipy import special

from raydistill.platform import metrics as M
from raydistill.platform.errors import CheckpointError
from raydistill.platform.metrics import correctness
from raydistill.platform.report.trials import completed
from raydistill.platform.rundir import VAL_LOGITS

POLICY = "cluster bootstrap, moderated per-cell seed variance, Holm step-down"
ALPHA = 0.05
RESAMPLES = 2000
SEED = 0
# The empirical-Bayes prior is worth at most 3 seed degrees of freedom. With 1-2 df per cell the
# log of a cell's sample variance has a sampling SD of about 2 (trigamma(1/2) = 4.9), so a few
# cells 4-5x noisier than the rest go undetected and the fitted prior df runs to the cap; the
# cell that wins is then often the noisy one, its variance shrunk to the others'. Measured in
# tests/platform/report/test_calibration.py's regimes (300 studies each): a cap of 14 (the
# cells' total df) gave false `worse` in 11-14% of studies with unequal seed SDs, 4 gave 4-6%,
# 3 gave at most 2.3% while finding a strategy 3 points worse in 97%.
PRIOR_DF_CAP = 3.0
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
ROWS = "rows"  # the resampling unit when no clusters are known

_CHUNK = 4_000_000  # resample x cluster counts drawn at a time (bounds memory)


@dataclass(frozen=True)
class Draws:
    """One bootstrap of every unit's mean accuracy: ``means`` [K] observed, ``draws`` [B, K]
    resampled (clusters and seeds). ``seed_sd`` [K] is each unit's moderated seed SD."""

    means: np.ndarray
    draws: np.ndarray
    seed_sd: np.ndarray
    seed_df: int  # the cells' own seed degrees of freedom, summed
    prior_df: float  # the empirical-Bayes prior's degrees of freedom (inf: all cells alike)
    examples: int  # examples resampled (0: seed level only, no per-example correctness)
    clusters: int  # clusters resampled (== examples when the unit is the row)
    unit: str  # what a cluster is ("film", a column name, or "rows")

    def combine(self, weights: np.ndarray) -> "Draws":
        """Units that average cells: ``weights`` [K, U], each column summing to 1 (a strategy's
        cells over its temperatures). The draws stay joint, so the comparisons stay paired."""
        w = np.asarray(weights, dtype=float)
        sd = np.sqrt((self.seed_sd[:, None] ** 2 * w**2).sum(axis=0))  # independent seed noise
        return Draws(self.means @ w, self.draws @ w, sd, self.seed_df, self.prior_df, self.examples,
                     self.clusters, self.unit)


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


def bootstrap(accs: list[np.ndarray], cells: list[np.ndarray] | None, groups: np.ndarray | None = None,
              *, unit: str = ROWS, n_resamples: int = RESAMPLES, seed: int = SEED) -> Draws | None:
    """The joint draws of every cell's mean (see the module docstring). None when no cell has
    two seeds: without a seed variance there is nothing to resample it from."""
    seed_df = sum(len(a) - 1 for a in accs)
    if seed_df == 0:
        return None
    rng = np.random.default_rng(seed)
    means = np.array([a.mean() for a in accs])
    if cells is None:
        example_draws, n_examples, n_clusters = np.broadcast_to(means, (n_resamples, len(means))).copy(), 0, 0
    else:
        x = np.stack([c.mean(axis=0) for c in cells], axis=1)  # [N, K] seed-averaged correctness
        ids = _cluster_ids(groups, x.shape[0])
        example_draws = _cluster_draws(x, ids, n_resamples, rng)
        n_examples, n_clusters = x.shape[0], int(ids.max()) + 1
        unit = unit if groups is not None else ROWS
    variance, df, prior_df = moderated_seed_variance(accs)
    noise = _seed_example_noise(cells, len(accs))
    sizes = np.array([len(a) for a in accs])
    seed_draws = np.empty_like(example_draws)
    for c in range(len(accs)):
        if np.isfinite(df[c]):  # the posterior variance is itself uncertain (df degrees of freedom)
            v = variance[c] * df[c] / rng.chisquare(df[c], size=n_resamples)
        else:
            v = np.full(n_resamples, variance[c])
        v = np.maximum(v - noise[c], 0.0)
        seed_draws[:, c] = rng.standard_normal(n_resamples) * np.sqrt(v / sizes[c])
    seed_sd = np.sqrt(np.maximum(variance - noise, 0.0))
    return Draws(means, example_draws + seed_draws, seed_sd, seed_df, prior_df, n_examples,
                 n_clusters if cells is not None else 0, unit if cells is not None else ROWS)


def moderated_seed_variance(accs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """(posterior variance [K], its degrees of freedom [K], the prior's df d0) of one seed's
    accuracy, per cell: limma's squeezeVar (Smyth 2004). The prior (s0², d0) is fitted to the
    cells' sample variances by moments of log s²; d0 is capped at :data:`PRIOR_DF_CAP` (see
    there why) and is that cap when the cells' variances spread no more than sampling alone
    explains. A cell with one seed gets the prior alone."""
    df = np.array([len(a) - 1 for a in accs], dtype=float)
    var = np.array([a.var(ddof=1) if len(a) > 1 else np.nan for a in accs])
    total = df.sum()
    usable = (df > 0) & (var > 0)
    if usable.sum() >= 2:
        d = df[usable]
        e = np.log(var[usable]) - special.digamma(d / 2) + np.log(d / 2)
        excess = e.var(ddof=1) - special.polygamma(1, d / 2).mean()
        d0 = 2 * _trigamma_inverse(excess) if excess > 0 else np.inf
        d0 = min(d0, total, PRIOR_DF_CAP)
        s0 = np.exp(e.mean() + special.digamma(d0 / 2) - np.log(d0 / 2))
    else:  # one informative cell (or none): its variance is the prior, worth the total df
        d0 = min(total, PRIOR_DF_CAP)
        s0 = (np.nansum(np.where(df > 0, var * df, 0.0)) / total) if total else 0.0
    own = np.where(df > 0, np.nan_to_num(var), 0.0)
    posterior = (d0 * s0 + df * own) / (d0 + df)
    return posterior, d0 + df, float(d0)


def _trigamma_inverse(y: float) -> float:
    """x with trigamma(x) = y (limma's Newton iteration)."""
    if y > 1e7:
        return 1.0 / np.sqrt(y)
    if y < 1e-6:
        return 1.0 / y
    x = 0.5 + 1.0 / y
    for _ in range(50):
        tri = special.polygamma(1, x)
        step = tri * (1 - tri / y) / special.polygamma(2, x)
        x += step
        if -step / x < 1e-8:
            break
    return float(x)


def _seed_example_noise(cells: list[np.ndarray] | None, k: int) -> np.ndarray:
    """Per cell, the part of one seed's accuracy variance that is seed x example noise: the
    examples on which one seed is right and another wrong, variance (per-example spread across
    seeds) / N. The example draw carries it already (it resamples seed-averaged correctness), so
    the seed draw takes it off; counting it twice made the policy far too cautious. A one-seed
    cell takes the other cells' mean."""
    if cells is None:
        return np.zeros(k)
    noise = np.full(k, np.nan)
    for c, x in enumerate(cells):
        if x.shape[0] > 1:
            r = x - x.mean(axis=1, keepdims=True)  # [seeds, N]: each seed minus its accuracy
            noise[c] = r.var(axis=0, ddof=1).mean() / x.shape[1]
    fill = np.nanmean(noise) if np.isfinite(noise).any() else 0.0
    return np.where(np.isfinite(noise), noise, fill)


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


def _cluster_ids(groups: np.ndarray | None, n: int) -> np.ndarray:
    """0..G-1 per example: the clusters named by ``groups``, or one per row."""
    if groups is None:
        return np.arange(n)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups has shape {groups.shape}, the correctness arrays have {n} examples")
    return np.unique(groups, return_inverse=True)[1].reshape(-1)


def _cluster_draws(x: np.ndarray, ids: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """[B, K] cell means over resampled clusters (the same clusters for every cell): each
    resample draws G clusters with replacement and averages their examples."""
    g = int(ids.max()) + 1
    sums = np.zeros((g, x.shape[1]))
    np.add.at(sums, ids, x)  # [G, K] correctness summed per cluster
    sizes = np.bincount(ids, minlength=g).astype(float)  # [G]
    out = np.empty((n, x.shape[1]))
    step = max(1, _CHUNK // g)
    for start in range(0, n, step):
        b = min(step, n - start)
        counts = rng.multinomial(g, np.full(g, 1.0 / g), size=b).astype(float)  # [b, G]
        out[start:start + b] = (counts @ sums) / (counts @ sizes)[:, None]
    return out


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


def paired_bootstrap(
    correct_a: np.ndarray, correct_b: np.ndarray, *, groups: np.ndarray | None = None,
    confidence: float = 0.95, n_resamples: int = RESAMPLES, seed: int = SEED,
) -> tuple[float, float, float]:
    """(mean(a - b), ci_low, ci_high): a percentile bootstrap interval over clusters (``groups``)
    or examples, the same draws for both (paired). Inputs are per-example correctness [N] of
    two models on the same examples. Raises ValueError on empty or unequal inputs."""
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"need two equal-length 1-d arrays, got shapes {a.shape} and {b.shape}")
    d = (a - b)[:, None]  # [N, 1]
    draws = _cluster_draws(d, _cluster_ids(groups, len(d)), n_resamples, np.random.default_rng(seed))[:, 0]
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
