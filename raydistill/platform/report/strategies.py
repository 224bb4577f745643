"""The layer question per strategy: the strategy table (temperatures pooled), the temperature's
own effect and a strategy x temperature interaction check, from the cells' joint draws.

A strategy's mean is the average of its cells' means over the temperatures it ran (each cell
weighs the same), so its interval carries every one of its runs; the comparison with the best
strategy is the same step-down and the same three verdicts as the cells'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from raydistill.platform import metrics as M
from raydistill.platform.report import bootstrap as B
from raydistill.platform.report import stats as S

RUNS = "runs"


@dataclass(frozen=True)
class TemperatureEffect:
    """Mean accuracy at ``high`` minus at ``low``, over the strategies that ran both."""

    low: float
    high: float
    diff: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class LayerQuestion:
    strategies: pd.DataFrame  # strategy, runs, mean, diff_vs_best, ci_low, ci_high, p_holm, verdict
    temperature: list[TemperatureEffect]
    interaction_p: float  # NaN when fewer than 2 strategies ran 2 temperatures

    @property
    def interaction_is_real(self) -> bool:
        return bool(self.interaction_p < S.ALPHA)


def strategy_weights(summary: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """(strategies, weights [cells, strategies]): each strategy's cells, equally weighted."""
    names = list(dict.fromkeys(summary[M.STRATEGY]))
    w = np.zeros((len(summary), len(names)))
    for j, name in enumerate(names):
        rows = np.flatnonzero(summary[M.STRATEGY].to_numpy() == name)
        w[rows, j] = 1.0 / len(rows)
    return names, w


def layer_question(summary: pd.DataFrame, margin: float = S.MARGIN) -> LayerQuestion | None:
    """The strategy table, the temperature effects and the interaction check from ``summarize``'s
    draws (``summary.attrs["draws"]``); None when the cells could not be resampled."""
    draws: B.Draws | None = summary.attrs.get("draws")
    if draws is None or summary.empty:
        return None
    names, w = strategy_weights(summary)
    pooled = draws.combine(w)
    result = S.compare_draws(pooled, margin=margin)
    runs = summary.groupby(M.STRATEGY, sort=False)[S.N].sum().reindex(names).to_numpy()
    table = pd.DataFrame({M.STRATEGY: names, RUNS: runs, S.VAL_ACC_MEAN: pooled.means, S.DIFF: result.diff,
                          S.CI_LOW: result.ci_low, S.CI_HIGH: result.ci_high, S.P_ADJ: result.p_adj,
                          S.VERDICT: result.verdict})
    table = table.iloc[np.argsort(-table[S.VAL_ACC_MEAN].to_numpy(), kind="stable")].reset_index(drop=True)
    table.attrs.update(draws=pooled, best=names[result.best], margin=margin)
    grid = _grid(summary, names)
    return LayerQuestion(table, _temperature_effects(draws, summary, grid), S.interaction_p(draws, grid))


def _grid(summary: pd.DataFrame, names: list[str]) -> np.ndarray:
    """[strategies, temperatures] cell index, -1 where the cell did not complete."""
    temps = sorted(summary[M.TEMPERATURE].unique())
    grid = np.full((len(names), len(temps)), -1)
    for i, (s, t) in enumerate(zip(summary[M.STRATEGY], summary[M.TEMPERATURE])):
        grid[names.index(s), temps.index(t)] = i
    return grid


def _temperature_effects(draws: B.Draws, summary: pd.DataFrame, grid: np.ndarray) -> list[TemperatureEffect]:
    """Each temperature against the lowest, over the strategies that ran both."""
    temps = sorted(summary[M.TEMPERATURE].unique())
    out = []
    for j in range(1, len(temps)):
        both = grid[(grid[:, 0] >= 0) & (grid[:, j] >= 0)]
        if len(both) == 0:
            continue
        w = np.zeros(len(summary))
        w[both[:, j]] += 1.0 / len(both)
        w[both[:, 0]] -= 1.0 / len(both)
        diff, low, high = S.contrast(draws, w)
        out.append(TemperatureEffect(float(temps[0]), float(temps[j]), diff, low, high))
    return out
