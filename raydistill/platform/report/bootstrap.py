"""One bootstrap that every cell of a study shares: the joint draws of each cell's mean accuracy.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

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
