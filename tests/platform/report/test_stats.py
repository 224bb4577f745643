"""The one inference policy: summary columns, the winner, and calibration proven by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from raydistill.platform import metrics as M
from raydistill.platform import report as R
from raydistill.platform.errors import CheckpointError
from raydistill.platform.report import stats as S
from raydistill.platform.rundir import RunDir

pytestmark = pytest.mark.unit


def test_summarize_means_stds_retained_and_verdicts(fx) -> None:
    summary = R.summarize(fx.make_frame(fx.CELLS), teacher_accuracy=fx.TEACHER_VAL_ACC, majority_accuracy=0.5)
    assert list(zip(summary[M.STRATEGY], summary[M.TEMPERATURE])) == [
        ("top", 2.0), ("top", 4.0), ("bottom", 2.0), ("bottom", 4.0)]  # best mean first
    cells = summary.set_index([M.STRATEGY, M.TEMPERATURE])
    for cell, accs in fx.CELLS.items():
        got = cells.loc[cell]
        assert got[S.N] == 3
        assert got[S.VAL_ACC_MEAN] == pytest.approx(np.mean(accs))
        assert got[S.VAL_ACC_STD] == pytest.approx(np.std(accs, ddof=1))
        assert got[S.RETAINED] == pytest.approx(np.mean(accs) / fx.TEACHER_VAL_ACC)
        assert got[S.RETAINED_GAIN] == pytest.approx((np.mean(accs) - 0.5) / (fx.TEACHER_VAL_ACC - 0.5))
        assert got[S.TRAIN_LOSS_MEAN] == pytest.approx(0.4) and got[S.VAL_LOSS_MEAN] == pytest.approx(0.6)
        assert got[S.DIFF] == pytest.approx(np.mean(accs) - np.mean(fx.CELLS[("top", 2.0)]))
    # bottom T=2 (0.90, 0.60, 0.62) inflates the pooled seed variance: nothing is shown worse.
    assert list(summary[S.VERDICT]) == [S.BEST, S.TIED, S.TIED, S.TIED]
    steady = R.summarize(fx.make_frame({("top", 2.0): [0.80, 0.79, 0.81], ("odd", 2.0): [0.795, 0.80, 0.79],
                                        ("even", 2.0): [0.70, 0.71, 0.69]}))
    assert list(steady[S.VERDICT]) == [S.BEST, S.TIED, S.WORSE]
    # The interval and the verdict come from one rule: worse exactly when it lies below 0.
    for row in summary.iloc[1:].itertuples():
        assert (getattr(row, S.VERDICT) == S.WORSE) == (getattr(row, S.CI_HIGH) < 0)
        assert getattr(row, S.CI_LOW) <= getattr(row, S.DIFF) <= getattr(row, S.CI_HIGH)
    assert summary.attrs["examples"] == 0  # no logits in a hand-made frame: seeds only


def test_winner_is_best_mean_not_best_single_seed(fx) -> None:
    df = fx.make_frame(fx.CELLS)
    best_single = df.loc[df[M.VAL_ACCURACY].idxmax()]
    assert (best_single[M.STRATEGY], best_single[M.TEMPERATURE]) == ("bottom", 2.0)
    assert R.choose_winner(R.summarize(df)) == ("top", 2.0)


def test_winner_ties_go_to_more_seeds_then_name(fx) -> None:
    tie_n = R.summarize(fx.make_frame({("a", 2.0): [0.7, 0.8], ("b", 2.0): [0.8, 0.7, 0.75]}))
    assert R.choose_winner(tie_n) == ("b", 2.0)
    tie_name = R.summarize(fx.make_frame({("odd", 4.0): [0.7, 0.8], ("even", 2.0): [0.8, 0.7]}))
    assert R.choose_winner(tie_name) == ("even", 2.0)
    with pytest.raises(CheckpointError, match="no completed"):
        R.choose_winner(R.summarize(fx.make_frame({}).reindex(columns=fx.make_frame(fx.CELLS).columns)))


def test_error_and_stopped_trials_are_never_averaged(run: RunDir, fx) -> None:
    summary = R.summarize(R.load_results(run.root)).set_index([M.STRATEGY, M.TEMPERATURE])
    # top T=2 has a 4th, stopped trial at 0.97 and odd has only an ERROR trial at 0.99.
    assert summary.loc[("top", 2.0)][S.N] == 3
    assert summary.loc[("top", 2.0)][S.VAL_ACC_MEAN] == pytest.approx(np.mean(fx.CELLS[("top", 2.0)]))
    assert "odd" not in summary.index.get_level_values(0)


def test_summary_resamples_examples_from_trial_logits(run: RunDir, fx) -> None:
    df = R.load_results(run.root)
    labels = np.load(run.eval_labels("validation"))
    summary = R.summarize(df, labels=labels, n_resamples=500)
    assert summary.attrs["examples"] == fx.N_VAL
    cells = summary.set_index([M.STRATEGY, M.TEMPERATURE])
    assert cells.loc[("top", 2.0)][S.VERDICT] == S.BEST and np.isnan(cells.loc[("top", 2.0)][S.CI_LOW])
    for cell in [("top", 4.0), ("bottom", 2.0), ("bottom", 4.0)]:
        # The logits reproduce each seed's accuracy: the point estimate is the difference of means.
        expected = np.mean(fx.CELLS[cell]) - np.mean(fx.CELLS[("top", 2.0)])
        assert cells.loc[cell][S.DIFF] == pytest.approx(expected)
        assert (cells.loc[cell][S.VERDICT] == S.WORSE) == (cells.loc[cell][S.CI_HIGH] < 0)
    assert cells.loc[("top", 4.0)][S.VERDICT] == S.TIED


def test_one_seed_per_cell_is_not_tested() -> None:
    result = S.compare_with_best([[0.8], [0.7], [0.75]])
    assert result.verdict == [S.BEST, S.NOT_TESTED, S.NOT_TESTED] and result.seed_df == 0


def test_paired_bootstrap_ci_contains_the_true_difference() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    # The other model is right wherever the best is, except on a true 5% of examples.
    best = (rng.random(n) < 0.85).astype(float)
    other = best.copy()
    other[rng.permutation(np.flatnonzero(best))[: int(0.05 * n)]] = 0.0
    diff, low, high = S.paired_bootstrap(other, best, n_resamples=1000)
    assert diff == pytest.approx(-0.05)
    assert low < -0.05 < high and high < 0 and high - low < 0.02  # pairing makes it tight
    assert (diff, low, high) == S.paired_bootstrap(other, best, n_resamples=1000)  # seeded
    assert S.paired_bootstrap(best, best) == (0.0, 0.0, 0.0)


# ---------------------------------------------------------------------------------------------
# Calibration by simulation (no Ray, no files: the policy's own entry point)
#
# A student's correctness on example i is 1[theta_i + delta + eps > 0]: theta_i ~ N(MU, TAU) is
# the example's easiness, shared by every student (so students agree where examples are easy or
# hopeless), eps ~ N(0, 1) is the student's own noise, and delta shifts one (cell, seed)'s
# accuracy by an offset ~ N(0, 1 point) (seed-to-seed variation) -- and by -4 points for a
# planted cell. MU, TAU give accuracy 0.80 and 90% agreement between two students (checked below).

MU, TAU = 2.664, 2.998
CELLS_N, EXAMPLES, STUDIES, RESAMPLES = 13, 1000, 400, 300
SEED_SD, DROP = 0.01, 0.04


def _study(rng: np.random.Generator, seeds: int, drop: float = 0.0, seed_sd: float = SEED_SD) -> np.ndarray:
    """[cells, seeds, examples] correctness; the last cell is `drop` lower in truth."""
    theta = rng.normal(MU, TAU, EXAMPLES)
    slope = stats.norm.pdf(theta).mean()  # accuracy per unit of latent shift
    offset = rng.normal(0.0, seed_sd, (CELLS_N, seeds))
    offset[-1] -= drop
    return theta + (offset / slope)[..., None] + rng.standard_normal((CELLS_N, seeds, EXAMPLES)) > 0


def _flag_rates(seeds: int, drop: float, seed_sd: float = SEED_SD) -> tuple[float, float]:
    """(share of studies with any cell `worse`, share with the last cell `worse`)."""
    rng = np.random.default_rng(1000 * seeds + int(1000 * drop) + int(1e5 * seed_sd))
    any_worse = last_worse = 0
    for i in range(STUDIES):
        correct = _study(rng, seeds, drop, seed_sd)
        result = S.compare_with_best([c.mean(axis=1) for c in correct], list(correct),
                                     n_resamples=RESAMPLES, seed=i)
        any_worse += S.WORSE in result.verdict
        last_worse += result.verdict[-1] == S.WORSE
    return any_worse / STUDIES, last_worse / STUDIES


def test_the_simulated_students_are_realistic() -> None:
    correct = _study(np.random.default_rng(0), seeds=40)
    acc = correct.mean(axis=2)  # [cells, seeds]
    agree = (correct[:, :-1] == correct[:, 1:]).mean()
    assert acc.mean() == pytest.approx(0.80, abs=0.01)
    assert agree == pytest.approx(0.90, abs=0.01)
    # seed-to-seed std: the 1-point offset plus each student's own example noise
    assert 0.009 < acc.std(axis=1, ddof=1).mean() < 0.014


def test_seed_variance_is_net_of_the_example_noise_the_example_draw_carries() -> None:
    # Observed seed-to-seed variance = the 1-point offsets + each student's own example noise;
    # the policy keeps only the first for its seed draw (the example draw has the second).
    rng = np.random.default_rng(7)
    observed, net = [], []
    for _ in range(40):
        correct = list(_study(rng, seeds=3))
        accs = [c.mean(axis=1) for c in correct]
        pooled, noise = S._seed_variance_parts(accs, correct, df=2 * CELLS_N)
        assert pooled == pytest.approx(np.mean([a.var(ddof=1) for a in accs]))
        observed.append(pooled)
        net.append(pooled - noise)
    assert np.mean(observed) > 1.3 * SEED_SD**2
    assert np.mean(net) == pytest.approx(SEED_SD**2, rel=0.15)


@pytest.mark.parametrize("seeds", [2, 3])
def test_no_more_than_8_percent_false_alarms_under_the_null(seeds: int) -> None:
    rate, _ = _flag_rates(seeds, 0.0)
    print(f"\nnull, {seeds} seeds: a cell flagged `worse` in {rate:.1%} of {STUDIES} studies")
    assert rate <= 0.08, f"{seeds} seeds: false alarms in {rate:.1%} of {STUDIES} null studies (limit 8%)"


def test_a_planted_4_point_drop_is_found_with_3_seeds() -> None:
    any_rate, found = _flag_rates(3, DROP)
    print(f"\nplanted 4-point drop, 3 seeds: found in {found:.1%} of {STUDIES} studies "
          f"(any cell flagged: {any_rate:.1%})")
    assert found >= 0.80, f"the planted drop was found in {found:.1%} of {STUDIES} studies (need 80%)"


QUIET_SEED_SD = 0.002  # seeds that barely differ beyond their own example noise


@pytest.mark.parametrize("seeds", [2, 3])
def test_seeds_that_barely_differ_keep_the_calibration_and_the_power(seeds: int) -> None:
    """When the seed-to-seed spread is mostly seed x example noise (net seed variance near 0),
    the net variance is a small difference of two close numbers. Treating it as a scaled chi2
    with Satterthwaite's degrees of freedom (down to 1: Cauchy tails) made every interval
    several points wide; drawing the observed variance and subtracting the noise keeps both."""
    null, _ = _flag_rates(seeds, 0.0, QUIET_SEED_SD)
    _, found = _flag_rates(seeds, DROP, QUIET_SEED_SD)
    print(f"\nseed SD {100 * QUIET_SEED_SD:.1f} points, {seeds} seeds: false alarms {null:.1%}, "
          f"planted 4-point drop found {found:.1%} of {STUDIES} studies")
    assert null <= 0.08 and found >= 0.80, (null, found)
