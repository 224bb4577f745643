"""Exploratory and confirmatory, apart: the validation verdicts re-tested on test examples that
no choice has seen.

Validation is where recipes, budgets and the policy were chosen, so its verdicts are exploratory.
The confirmation set is the test split less the examples an earlier choice saw (for the embedded
data, the films of the earlier 10%-of-films validation split: ``RUN/labels/test_unseen.npy``).
On it the same policy runs with the best cell and the best strategy fixed to validation's (no
second selection), and each validation finding either replicates (the same verdict) or not. The
contrasts the config declared before the run (``report.confirm``) are tested there as planned
comparisons, Bonferroni-corrected among themselves: those are the confirmatory claims.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from raydistill.platform import metrics as M
from raydistill.platform.report import bootstrap as B
from raydistill.platform.report import stats as S
from raydistill.platform.report.strategies import LayerQuestion, strategy_weights
from raydistill.platform.report.trials import completed

BETTER = "better"  # a declared contrast whose first strategy is shown better than its second
VALIDATION_VERDICT = "validation_verdict"
REPLICATES = "replicates"
CONTRAST = "contrast"


@dataclass(frozen=True)
class Confirmation:
    examples: int  # test examples used
    left_out: int  # test examples an earlier choice saw
    clusters: int
    unit: str
    cells: pd.DataFrame  # strategy, temperature, diff, ci, verdict, validation_verdict, replicates
    strategies: pd.DataFrame  # strategy, diff, ci, verdict, validation_verdict, replicates
    declared: pd.DataFrame  # contrast, validation diff/ci/verdict, confirmation diff/ci/verdict


def replicates(validation: str, confirmation: str) -> str:
    """"yes"/"no" for a validation finding (worse or equivalent); "—" when there was none."""
    if validation not in (S.WORSE, S.EQUIVALENT):
        return "—"
    return "yes" if confirmation == validation else "no"


def confirm(trials: pd.DataFrame, summary: pd.DataFrame, layer: LayerQuestion | None,
            evidence: S.Evidence, keep: np.ndarray, pairs: list[tuple[str, str]],
            margin: float = S.MARGIN) -> Confirmation | None:
    """The validation findings of ``summary`` (cells) and ``layer`` (strategies) re-tested on
    the test examples in ``keep``; None when a trial lacks test logits or nothing is resampled."""
    cells = S.cell_trials(completed(trials), summary)
    correct = S.cell_correctness(cells, evidence, keep)
    if correct is None or layer is None or not keep.any():
        return None
    accs = [x.mean(axis=1, dtype=np.float64) for x in correct]
    groups = None if evidence.groups is None else evidence.groups[keep]
    draws = B.bootstrap(accs, correct, groups, unit=evidence.unit)
    if draws is None:
        return None
    by_cell = S.compare_draws(draws, 0, margin=margin)
    cell_table = summary[S.CELL].copy()
    _fill(cell_table, by_cell, summary[S.VERDICT])
    names, w = strategy_weights(summary)
    pooled = draws.combine(w)
    validation = layer.strategies.set_index(M.STRATEGY).reindex(names)
    by_strategy = S.compare_draws(pooled, names.index(layer.strategies.attrs["best"]), margin=margin)
    strategy_table = pd.DataFrame({M.STRATEGY: names})
    _fill(strategy_table, by_strategy, validation[S.VERDICT].to_numpy())
    order = [names.index(s) for s in layer.strategies[M.STRATEGY]]  # validation's order
    return Confirmation(int(keep.sum()), int((~keep).sum()), draws.clusters, draws.unit, cell_table,
                        strategy_table.iloc[order].reset_index(drop=True),
                        _declared(pairs, names, layer, pooled, margin))


def _fill(table: pd.DataFrame, result: S.Comparison, validation_verdicts) -> None:
    table[S.DIFF], table[S.CI_LOW], table[S.CI_HIGH] = result.diff, result.ci_low, result.ci_high
    table[S.VERDICT] = result.verdict
    table[VALIDATION_VERDICT] = list(validation_verdicts)
    table[REPLICATES] = [replicates(v, c) for v, c in zip(table[VALIDATION_VERDICT], table[S.VERDICT])]


def _declared(pairs: list[tuple[str, str]], names: list[str], layer: LayerQuestion, pooled: B.Draws,
              margin: float) -> pd.DataFrame:
    """Each declared (a, b): a − b on validation (exploratory) and on the confirmation set, both
    Bonferroni-corrected over the declared pairs."""
    best = layer.strategies.attrs["best"]
    val = layer.strategies.attrs["draws"]
    rows = []
    for a, b in pairs:
        a, b = (best if x == "best" else x for x in (a, b))
        if a not in names or b not in names or a == b:
            continue
        w = np.zeros(len(names))
        w[names.index(a)], w[names.index(b)] = 1.0, -1.0
        row = {CONTRAST: f"{a} − {b}"}
        for prefix, draws in (("validation_", val), ("", pooled)):
            diff, low, high = S.contrast(draws, w, alpha=S.ALPHA / len(pairs))
            row.update({prefix + S.DIFF: diff, prefix + S.CI_LOW: low, prefix + S.CI_HIGH: high,
                        prefix + S.VERDICT: contrast_verdict(low, high, margin)})
        rows.append(row)
    return pd.DataFrame(rows)


def contrast_verdict(low: float, high: float, margin: float) -> str:
    if low > 0:
        return BETTER
    return S.verdict_of(False, high < 0, low, high, margin)
