"""Guard rails for a user's own study: sizes that fit the data, checked before Ray starts. (The
teacher's own check, that it beats the majority class, is the report's:
:mod:`raydistill.platform.report.baseline`.)

A study on a few hundred sentences with the default's sizes used to be refused without a hint,
or worse, run: a teacher at the majority rate, students "retaining 100%" of nothing, a winner
crowned on noise. These checks say what fits and stop what cannot be trusted.
"""

from __future__ import annotations

import math

from raydistill.platform.config import ExperimentConfig
from raydistill.platform.errors import ConfigError, PoolExhaustedError

# How wide the report's interval is, for the validation-size warning: a simultaneous 95% interval
# over a dozen cells is about +-2.5 standard errors, and two students disagree on about 15% of
# the examples (the default's students: 12-20%), so its half-width is about 2.5 * sqrt(0.15 / N).
_CRITICAL, _DISAGREEMENT = 2.5, 0.15


def suggested_sizes(pool_size: int) -> dict[str, int | None]:
    """Active-learning and transfer sizes that fit a pool: a quarter of it labelled at random,
    two acquisitions of an eighth each (half the pool labelled in the end), the whole pool as the
    transfer set."""
    initial = max(2, pool_size // 4)
    query = max(1, pool_size // 8)
    rounds = 2 if initial + 2 * query <= pool_size else 0
    return {"al.initial_labeled": initial, "al.query_size": query, "al.rounds": rounds,
            "student.transfer_size": None}


def _as_overrides(sizes: dict[str, int | None]) -> str:
    return " ".join(f"--set {k}={'null' if v is None else v}" for k, v in sizes.items())


def check_sizes(cfg: ExperimentConfig, pool_size: int, validation_size: int) -> list[str]:
    """Refuse sizes the data cannot supply, suggesting ones that fit; return warnings (a
    validation split too small for the report's margin). Raises PoolExhaustedError or
    ConfigError naming the setting and both numbers."""
    al = cfg.al
    budget = al.initial_labeled + al.rounds * al.query_size
    if budget > pool_size:
        raise PoolExhaustedError(
            f"al.initial_labeled + al.rounds * al.query_size = {al.initial_labeled} + {al.rounds} * "
            f"{al.query_size} = {budget} labels, the pool has only {pool_size} examples; sizes that fit "
            f"it: {_as_overrides(suggested_sizes(pool_size))}")
    transfer = cfg.student.transfer_size
    if transfer is not None and transfer > pool_size:
        raise ConfigError(
            f"student.transfer_size = {transfer} exceeds the pool's {pool_size} examples: set it to at "
            f"most {pool_size}, or null to distil on the whole pool (--set student.transfer_size=null)")
    needed = smallest_validation(cfg.report.margin_fraction)
    if validation_size < needed:
        return [f"the validation split has {validation_size:,} examples: with report.margin = "
                f"{cfg.report.margin:g} point(s) the report can call cells `worse` but hardly ever "
                f"`equivalent` (its intervals are about ±{100 * half_width(validation_size):.1f} points); "
                f"about {needed:,} examples would do, or a wider margin"]
    return []


def half_width(n_examples: int) -> float:
    """The report's interval half-width, roughly, for a validation split of ``n_examples``."""
    return _CRITICAL * math.sqrt(_DISAGREEMENT / max(n_examples, 1))


def smallest_validation(margin: float) -> int:
    """The validation size at which the interval's half-width falls to ``margin`` (a fraction)."""
    return math.ceil(_CRITICAL**2 * _DISAGREEMENT / margin**2)
