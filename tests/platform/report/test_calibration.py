"""The policy's calibration, proven by simulation at production settings (no Ray, no files).

14 cells (7 strategies x 2 temperatures) x 2 seeds, N = 2,542 examples in 121 clusters with
within-cluster correlation 0.2, B = the report's resamples, 1,000 studies a regime (Monte Carlo
SE about 0.7 points at 5%). Goals: a false ``worse`` (any truly tied cell or strategy) in at most
6% of studies in every regime; a cell truly 2 points worse called ``equivalent`` (margin 1) in at
most 5%; a strategy truly 3 points worse found in at least 80%. Each rate is printed with its
Monte Carlo SE (``pytest -s`` shows them). The last three tests remove one part of the policy
each and show that the goal then fails: the parts are there because they are needed.
"""

from __future__ import annotations

import numpy as np
import pytest

from raydistill.platform.report import bootstrap as B

from . import simulation as sim

pytestmark = pytest.mark.slow

STUDIES = 1000
FALSE_WORSE_GOAL, EQUIVALENT_GOAL, POWER_GOAL = 0.06, 0.05, 0.80


def test_the_simulated_studies_are_realistic() -> None:
    correct = sim.study(np.random.default_rng(0), sim.regimes()["equal 0.3"], seeds=2)
    x = correct[0, 0].astype(float)
    means = np.array([x[sim.GROUPS == g].mean() for g in range(sim.CLUSTERS)])
    size = sim.EXAMPLES / sim.CLUSTERS
    within = np.mean([x[sim.GROUPS == g].var(ddof=1) for g in range(sim.CLUSTERS)])
    icc = (size * means.var(ddof=1) - within) / (size * means.var(ddof=1) + (size - 1) * within)
    assert correct.shape == (14, 2, 2542) and sim.CLUSTERS == 121
    assert correct.mean() == pytest.approx(0.78, abs=0.02)
    assert (correct[0, 0] == correct[2, 0]).mean() == pytest.approx(0.88, abs=0.02)
    assert icc == pytest.approx(0.2, abs=0.05)


def _report(name: str, rates: sim.Rates) -> None:
    print(f"\n[{name}] " + "; ".join(rates.line(k) for k in sorted(rates.counts)))


@pytest.mark.parametrize("name", list(sim.regimes()))
def test_false_worse_at_most_6_percent_in_every_regime(name: str) -> None:
    regime = sim.regimes()[name]
    rates = sim.run(regime, STUDIES, seeds=2, seed=list(sim.regimes()).index(name))
    _report(name, rates)
    assert rates.rate("cell false worse") <= FALSE_WORSE_GOAL, rates.line("cell false worse")
    assert rates.rate("strategy false worse") <= FALSE_WORSE_GOAL, rates.line("strategy false worse")
    if "2-point equivalent" in rates.counts:
        assert rates.rate("2-point equivalent") <= EQUIVALENT_GOAL, rates.line("2-point equivalent")
    if "strategy gap found" in rates.counts:
        assert rates.rate("strategy gap found") >= POWER_GOAL, rates.line("strategy gap found")


@pytest.mark.parametrize("seeds", [2, 3])
def test_a_strategy_3_points_worse_is_found_in_80_percent(seeds: int) -> None:
    rates = sim.run(sim.regimes()["one strategy 3 worse"], STUDIES, seeds=seeds, seed=10 + seeds)
    _report(f"one strategy 3 worse, {seeds} seeds", rates)
    assert rates.rate("strategy gap found") >= POWER_GOAL, rates.line("strategy gap found")


# Each part of the policy removed in turn, in the regime where it matters (400 studies, B 1000:
# the failures are far past the goal).


def test_without_cluster_resampling_strategies_are_falsely_worse() -> None:
    rates = sim.run(sim.regimes()["by strategy"], 400, clustered=False, n_resamples=1000, seed=3)
    _report("by strategy, rows resampled", rates)
    assert rates.rate("strategy false worse") > FALSE_WORSE_GOAL


def test_without_per_cell_variance_unequal_seeds_raise_false_alarms(monkeypatch) -> None:
    monkeypatch.setattr(B, "PRIOR_DF_CAP", np.inf)  # the fitted prior alone: pooled, nearly
    rates = sim.run(sim.regimes()["two at 1.1"], 400, n_resamples=1000, seed=4)
    _report("two at 1.1, pooled seed variance", rates)
    assert rates.rate("cell false worse") > FALSE_WORSE_GOAL


def test_without_the_multiplicity_step_false_alarms_explode() -> None:
    rates = sim.run(sim.regimes()["equal 1.0"], 400, compare=sim.marginal, n_resamples=1000, seed=5)
    _report("equal 1.0, no multiplicity step", rates)
    assert rates.rate("cell false worse") > 3 * FALSE_WORSE_GOAL
