"""The one inference policy: summary columns, the winner, and calibration proven by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from raydistill.platform import metrics as M
from raydistill.platform import report as R
from raydistill.platform.errors import CheckpointError
from raydistill.platform.report import bootstrap as B
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
    # bottom T=2 (0.90, 0.60, 0.62) has its own wide seed spread and stays inconclusive; bottom
    # T=4 (0.60, 0.61, 0.605) is tight and 18.5 points down: worse. (A pooled seed variance, the
    # old policy, let bottom T=2's spread hide it.)
    assert list(summary[S.VERDICT]) == [S.BEST, S.INCONCLUSIVE, S.INCONCLUSIVE, S.WORSE]
    # Each cell keeps its own seed SD, moderated: bottom T=2's stays the widest.
    assert summary[S.SEED_SD].idxmax() == summary.index[(summary[M.STRATEGY] == "bottom") & (summary[M.TEMPERATURE] == 2.0)][0]
    steady = R.summarize(fx.make_frame({("top", 2.0): [0.80, 0.79, 0.81], ("odd", 2.0): [0.795, 0.80, 0.79],
                                        ("even", 2.0): [0.70, 0.71, 0.69]}))
    assert list(steady[S.VERDICT]) == [S.BEST, S.INCONCLUSIVE, S.WORSE]
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
    assert cells.loc[("top", 4.0)][S.VERDICT] == S.INCONCLUSIVE


def test_one_seed_per_cell_is_not_tested() -> None:
    result = S.compare_with_best([[0.8], [0.7], [0.75]])
    assert result.verdict == [S.BEST, S.NOT_TESTED, S.NOT_TESTED] and result.seed_df == 0


def test_three_verdicts_from_one_interval_at_the_margin() -> None:
    assert S.verdict_of(False, True, -0.02, -0.001, 0.01) == S.WORSE
    assert S.verdict_of(False, False, -0.009, 0.009, 0.01) == S.EQUIVALENT
    assert S.verdict_of(False, False, -0.011, 0.002, 0.01) == S.INCONCLUSIVE
    assert S.verdict_of(True, False, np.nan, np.nan, 0.01) == S.BEST


def test_moderated_seed_variance_follows_limma() -> None:
    # Cells whose variances spread no more than sampling explains: the prior takes the cap and
    # every posterior sits between the cell's own and the prior.
    rng = np.random.default_rng(0)
    accs = [rng.normal(0.8, 0.01, 3) for _ in range(14)]
    post, df, d0 = B.moderated_seed_variance(accs)
    own = np.array([a.var(ddof=1) for a in accs])
    assert d0 <= B.PRIOR_DF_CAP and np.all(df == d0 + 2)
    lo, hi = np.minimum(own, post.mean()), np.maximum(own, post.mean())
    assert np.all(post >= lo.min()) and np.all(post <= hi.max())
    # Shrinkage: the widest cell comes down, the narrowest goes up, the order stays.
    assert post.max() < own.max() and post.min() > own.min()
    assert np.argsort(post).tolist() == np.argsort(own).tolist()
    # A one-seed cell gets the prior alone.
    post1, df1, _ = B.moderated_seed_variance(accs + [np.array([0.8])])
    assert df1[-1] == d0 and post1[-1] > 0


def test_clusters_widen_the_interval_of_correlated_examples() -> None:
    # Two models that differ by whole clusters: resampling rows understates the noise.
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(100), 20)
    a = (rng.random(100)[groups] < 0.8).astype(float)
    b = (rng.random(100)[groups] < 0.8).astype(float)
    _, lo_rows, hi_rows = B.paired_bootstrap(a, b, n_resamples=1000)
    _, lo_clusters, hi_clusters = B.paired_bootstrap(a, b, groups=groups, n_resamples=1000)
    assert (hi_clusters - lo_clusters) > 3 * (hi_rows - lo_rows)


def test_paired_bootstrap_ci_contains_the_true_difference() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    # The other model is right wherever the best is, except on a true 5% of examples.
    best = (rng.random(n) < 0.85).astype(float)
    other = best.copy()
    other[rng.permutation(np.flatnonzero(best))[: int(0.05 * n)]] = 0.0
    diff, low, high = B.paired_bootstrap(other, best, n_resamples=1000)
    assert diff == pytest.approx(-0.05)
    assert low < -0.05 < high and high < 0 and high - low < 0.02  # pairing makes it tight
    assert (diff, low, high) == B.paired_bootstrap(other, best, n_resamples=1000)  # seeded
    assert B.paired_bootstrap(best, best) == (0.0, 0.0, 0.0)


def test_a_teacher_at_the_majority_rate_is_not_trusted() -> None:
    from raydistill.platform.report.baseline import check_teacher, untrusted_line

    rng = np.random.default_rng(0)
    labels = (rng.random(600) < 0.6).astype(int)
    groups = np.arange(600) // 20
    majority = np.tile([[0.0, 1.0]], (600, 1))  # always the majority label
    check = check_teacher(majority, labels, groups)
    assert check.accuracy == check.majority and not check.beats_majority
    line = untrusted_line(check)
    assert line.startswith("Nothing below can be trusted: the teacher (0.") and line.endswith("No winner is named.")
    good = np.eye(2)[np.where(rng.random(600) < 0.85, labels, 1 - labels)]  # right on 85%
    assert check_teacher(good, labels, groups).beats_majority and untrusted_line(check_teacher(good, labels)) is None
