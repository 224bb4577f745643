"""Markdown: the study's table, the verdict sentence, the not-averaged and duplicate trials.

Pure functions of the frames the other modules build; the report, the CLI summary and the
pipeline print the same table and the same sentence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from raydistill.platform import metrics as M
from raydistill.platform.report import bootstrap as B
from raydistill.platform.report import stats as S
from raydistill.platform.report.trials import (
    COMPLETED,
    DUPLICATE_OF,
    ERRORED,
    duplicates,
    not_completed,
)


def fmt(value: Any, spec: str, missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return missing
    return format(value, spec)


def fmt_int(value: Any, missing: str = "—") -> str:
    try:
        return missing if pd.isna(value) else str(int(value))
    except (TypeError, ValueError):
        return str(value)


def fmt_acc(mean: Any, std: Any) -> str:
    return f"{fmt(mean, '.4f')} ± {fmt(std, '.4f')}"


def _fmt_diff(row: dict[str, Any]) -> str:
    if row[S.VERDICT] == S.BEST:
        return "—"
    if np.isnan(row[S.CI_LOW]):
        return f"{100 * row[S.DIFF]:+.1f}"
    return f"{100 * row[S.DIFF]:+.1f} [{100 * row[S.CI_LOW]:+.1f}, {100 * row[S.CI_HIGH]:+.1f}]"


TABLE_HEAD = ["strategy", "T", "train loss", "val loss", "val acc mean ± std", "n", "retained",
              "retained gain", M.FIDELITY, "params", f"vs best, points [{S.CONFIDENCE} CI]", "p (Holm)", "verdict"]


def format_table(summary: pd.DataFrame, teacher: dict[str, Any] | None = None) -> str:
    """The study's table in markdown, one row per cell (best mean first), plus the teacher's
    row when ``teacher`` (keys ``accuracy`` and optionally ``params``) is given. ``retained`` is
    the share of the teacher's accuracy, ``retained gain`` the share of its gain over the
    majority-class baseline; the last three columns are the inference policy's."""
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    for r in summary.itertuples(index=False):
        row = r._asdict()
        lines.append(
            f"| {row[M.STRATEGY]} | {row[M.TEMPERATURE]:g} | {fmt(row[S.TRAIN_LOSS_MEAN], '.4f')} "
            f"| {fmt(row[S.VAL_LOSS_MEAN], '.4f')} | {fmt_acc(row[S.VAL_ACC_MEAN], row[S.VAL_ACC_STD])} "
            f"| {row[S.N]} | {fmt(row[S.RETAINED], '.1%')} | {fmt(row[S.RETAINED_GAIN], '.1%')} "
            f"| {fmt(row[S.FIDELITY_MEAN], '.3f')} | {fmt(row[M.PARAMS], ',.0f')} | {_fmt_diff(row)} "
            f"| {fmt(row[S.P_ADJ], '.3g')} | {row[S.VERDICT]} |"
        )
    if teacher is not None:
        lines.append(
            f"| teacher | — | — | — | {fmt(teacher.get(M.ACCURACY), '.4f')} | 1 | 100.0% | 100.0% | 1.000 "
            f"| {fmt(teacher.get(M.PARAMS), ',.0f')} | — | — | — |"
        )
    return "\n".join(lines)


def _names(rows: pd.DataFrame) -> str:
    return ", ".join(f"{s} T={t:g}" for s, t in zip(rows[M.STRATEGY], rows[M.TEMPERATURE]))


def margin_of(summary: pd.DataFrame) -> float:
    return float(summary.attrs.get("margin", S.MARGIN))


def verdict_sentence(summary: pd.DataFrame) -> str:
    """What the verdict column says, in one or two sentences: the line the report, the CLI and
    the pipeline print. It counts the three verdicts at the declared margin and crowns no winner
    unless every other cell is worse; when the teacher does not beat the majority class it says
    that nothing can be trusted instead."""
    if summary.attrs.get("untrusted"):
        return summary.attrs["untrusted"]
    if summary.empty:
        return "No trial completed: there is nothing to compare."
    if len(summary) == 1:
        return "Only one cell completed: there is nothing to compare it with."
    verdicts = summary[S.VERDICT]
    best = summary[verdicts == S.BEST].iloc[0]
    top = f"{best[M.STRATEGY]} T={best[M.TEMPERATURE]:g} ({fmt_acc(best[S.VAL_ACC_MEAN], best[S.VAL_ACC_STD])})"
    if (verdicts[verdicts != S.BEST] == S.NOT_TESTED).all():
        return (f"Not tested: no cell has two completed seeds, so the seed variance is unknown; "
                f"the highest mean is {top}, which may be noise.")
    others = len(summary) - 1
    worse, equivalent, open_ = (summary[verdicts == v] for v in (S.WORSE, S.EQUIVALENT, S.INCONCLUSIVE))
    margin = f"margin ±{100 * margin_of(summary):g} point(s), validation, exploratory"
    if len(worse) == others:
        return f"{top} is better than every other cell: all {others} are worse ({margin})."
    parts = [f"{len(worse)} worse" + (f" ({_names(worse)})" if len(worse) else ""),
             f"{len(equivalent)} equivalent" + (f" ({_names(equivalent)})" if len(equivalent) else ""),
             f"{len(open_)} inconclusive"]
    return (f"{top} has the highest mean, not a winner: of the {others} other cells {', '.join(parts)} "
            f"({margin}).")


def policy_note(summary: pd.DataFrame) -> str:
    """How the verdicts were reached, with the numbers that make it reproducible."""
    draws: B.Draws | None = summary.attrs.get("draws")
    if draws is not None and draws.examples:
        level = (f"{draws.clusters:,} {draws.unit} clusters of the {draws.examples:,} validation examples "
                 "resampled (the same clusters for every cell: paired)" if draws.unit != B.ROWS else
                 f"the {draws.examples:,} validation examples resampled as rows (no clusters known: the "
                 "config names no data.group_column), the same for every cell")
    else:
        level = "seeds only (no val_logits.npy for every trial, so the examples are not resampled)"
    prior = "" if draws is None else f", prior df {draws.prior_df:.1f}"
    return (f"Inference: {S.POLICY}. Each cell is compared with the best mean: the difference in mean "
            f"validation accuracy and its {S.CONFIDENCE} interval from {summary.attrs.get('resamples', B.RESAMPLES):,} "
            f"resamples ({level}; each cell's own seed variance moderated toward the others' by empirical "
            f"Bayes, {summary.attrs.get('seed_df', 0)} seed degrees of freedom{prior}). Intervals and "
            "p-values are Holm step-down adjusted and allow for the best being picked as the maximum. "
            f"A cell is `worse` when its interval lies below 0, `equivalent` when it lies inside "
            f"±{100 * margin_of(summary):g} point(s) (report.margin), else `inconclusive`.")


def strategy_table(table: pd.DataFrame) -> str:
    """The strategy table (temperatures pooled) in markdown."""
    head = ["strategy", "runs", "val acc mean", f"vs best, points [{S.CONFIDENCE} CI]", "p (Holm)", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples(index=False):
        row = r._asdict()
        lines.append(f"| {row[M.STRATEGY]} | {row['runs']} | {fmt(row[S.VAL_ACC_MEAN], '.4f')} | {_fmt_diff(row)} "
                     f"| {fmt(row[S.P_ADJ], '.3g')} | {row[S.VERDICT]} |")
    return "\n".join(lines)


def strategy_sentence(table: pd.DataFrame) -> str:
    """The layer question in one line: the best strategy (temperatures pooled) and the others by
    verdict."""
    if table.empty:
        return "Strategies: nothing to compare."
    verdicts = table[S.VERDICT]
    best = table[verdicts == S.BEST][M.STRATEGY].iloc[0]
    parts = [f"{v} {', '.join(table[verdicts == v][M.STRATEGY])}" for v in (S.WORSE, S.EQUIVALENT, S.INCONCLUSIVE,
                                                                            S.NOT_TESTED)
             if (verdicts == v).any()]
    return (f"Strategies, temperatures pooled: {best} has the highest mean; " + "; ".join(parts)
            + f" (margin ±{100 * margin_of(table):g} point(s), validation, exploratory).")


def interval(diff: float, low: float, high: float) -> str:
    """"+1.2 points [−0.3, +2.7]"."""
    return f"{100 * diff:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}]"


def md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def failed_table(df: pd.DataFrame) -> str:
    lines = ["| trial | strategy | T | seed | status | epochs | reason |", "|" + "---|" * 7]
    for r in not_completed(df).itertuples(index=False):
        row = r._asdict()
        epochs = f"{fmt_int(row['epochs'])}/{fmt_int(row['expected_epochs'], '?')}"
        lines.append(f"| {row[M.TRIAL_ID]} | {row[M.STRATEGY]} | {fmt(row[M.TEMPERATURE], 'g')} "
                     f"| {fmt_int(row[M.SEED])} | {row['status']} | {epochs} "
                     f"| {md_escape(_reason(row))} |")
    return "\n".join(lines)


def _reason(row: dict[str, Any]) -> str:
    """Why a trial was not averaged: its exception, or how far it got."""
    if isinstance(row.get("error"), str) and row["error"]:
        return row["error"]
    reason = f"ran {fmt_int(row['epochs'])} of {fmt_int(row['expected_epochs'], '?')} epochs"
    status = row.get("tune_status")
    if isinstance(status, str) and status not in (COMPLETED, ERRORED):
        reason += f" (Tune status {status}: the sweep did not finish)"
    return reason


def duplicates_note(df: pd.DataFrame) -> list[str]:
    """The "duplicates ignored" section: older runs of a (strategy, T, seed), never averaged."""
    dups = duplicates(df)
    if dups.empty:
        return []
    lines = ["## Duplicates ignored", "",
             f"{len(dups)} trial(s) repeat a (strategy, temperature, seed) that ran again later (a "
             "second sweep without --resume); only the newest run of each is used.", "",
             "| ignored trial | strategy | T | seed | val acc | kept trial |", "|" + "---|" * 6]
    for r in dups.itertuples(index=False):
        row = r._asdict()
        lines.append(f"| {row[M.TRIAL_ID]} | {row[M.STRATEGY]} | {fmt(row[M.TEMPERATURE], 'g')} "
                     f"| {fmt_int(row[M.SEED])} | {fmt(row[M.VAL_ACCURACY], '.4f')} | {row[DUPLICATE_OF]} |")
    return lines + [""]
