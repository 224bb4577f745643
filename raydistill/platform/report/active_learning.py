"""The teacher's active-learning curve and its comparison with the random baseline.

``RUN/al/curve.csv`` has one line per (acquisition, round): labeled_count, val_accuracy, ...
Beside it the teacher stage writes ``RUN/al/<acquisition>/val_logits_round<r>.npy`` (float32
[n_val, C]). With those files, each budget (labeled_count) gets the difference main arm − random
with a 95% paired bootstrap interval over the validation examples, and one sentence; without
them the curve is reported as it is and nothing is claimed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raydistill.platform import metrics as M
from raydistill.platform.config import RANDOM_ACQUISITION
from raydistill.platform.errors import CheckpointError
from raydistill.platform.metrics import correctness
from raydistill.platform.report.bootstrap import paired_bootstrap
from raydistill.platform.report.run_files import optional_array, optional_logits
from raydistill.platform.rundir import RunDir

BASELINE = RANDOM_ACQUISITION
CONFIDENCE = 0.95
# Columns of al_comparison (besides one accuracy column per arm).
ARM = "arm"
DIFF = "diff_vs_random"
CI_LOW = "ci_low"
CI_HIGH = "ci_high"
SENTENCE = "sentence"


def read_al_curve(path: str | Path) -> pd.DataFrame:
    """``al/curve.csv``: one line per round per acquisition. Raises CheckpointError when the
    file is missing or lacks a column."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing active-learning curve {path}")
    curve = pd.read_csv(path)
    missing = sorted({M.ACQUISITION, M.ROUND, M.LABELED_COUNT, M.VAL_ACCURACY} - set(curve.columns))
    if missing:
        raise CheckpointError(f"{path} lacks columns {missing} (has {list(curve.columns)})")
    return curve


def al_comparison(run_dir: str | Path) -> pd.DataFrame:
    """One row per budget (labeled_count) at which the main arm and ``random`` both have a
    round: ``arm`` (the main acquisition), one accuracy column per arm, diff_vs_random (main −
    random, from the round logits), its 95% paired bootstrap interval over the validation
    examples and a one-sentence summary. Reads ``al/curve.csv``, ``al/<arm>/val_logits_round<r>.npy``
    and ``labels/validation.npy``; with ``labels/validation_groups.npy`` the bootstrap resamples
    clusters (films), else examples. Budgets without both logits files keep NaN and a sentence
    that claims nothing. Empty when there is no random arm or no other arm. Raises
    CheckpointError when the curve is missing or malformed, or logits do not match the labels."""
    run = RunDir(run_dir)
    curve = read_al_curve(run.al_curve)
    arms = list(dict.fromkeys(curve[M.ACQUISITION]))
    main = next((a for a in arms if a != BASELINE), None)
    cols = [M.LABELED_COUNT, ARM, main or "main", BASELINE, DIFF, CI_LOW, CI_HIGH, SENTENCE]
    if main is None or BASELINE not in arms:
        return pd.DataFrame(columns=cols)
    labels_path = run.eval_labels("validation")
    labels = np.load(labels_path, allow_pickle=False) if labels_path.is_file() else None
    groups = optional_array(run.eval_groups("validation"))
    groups = groups if labels is not None and groups is not None and len(groups) == len(labels) else None
    by_arm = {a: curve[curve[M.ACQUISITION] == a].drop_duplicates(M.LABELED_COUNT, keep="last")
              .set_index(M.LABELED_COUNT) for a in (main, BASELINE)}
    rows = []
    for budget in sorted(set(by_arm[main].index) & set(by_arm[BASELINE].index)):
        r_main, r_base = by_arm[main].loc[budget], by_arm[BASELINE].loc[budget]
        diff = low = high = np.nan
        if labels is not None:
            a = optional_logits(run.arm(main).round_logits(r_main[M.ROUND]), len(labels), labels_path)
            b = optional_logits(run.arm(BASELINE).round_logits(r_base[M.ROUND]), len(labels), labels_path)
            if a is not None and b is not None:
                diff, low, high = paired_bootstrap(correctness(a, labels), correctness(b, labels),
                                                   groups=groups, confidence=CONFIDENCE)
        row = {M.LABELED_COUNT: int(budget), ARM: main, main: float(r_main[M.VAL_ACCURACY]),
               BASELINE: float(r_base[M.VAL_ACCURACY]), DIFF: diff, CI_LOW: low, CI_HIGH: high}
        # Round 0 is one model shared by every arm (same initial set and seed): nothing to compare.
        row[SENTENCE] = (f"At {int(budget):,} labels both arms are the same round-0 model (the shared "
                         f"initial set): {row[main]:.1%}." if r_main[M.ROUND] == r_base[M.ROUND] == 0
                         else al_sentence(row))
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def al_sentence(row: dict) -> str:
    """The arm against random at one budget, with its interval and what the interval cannot
    carry. Each arm is one trained teacher (one seed): the interval resamples the validation
    examples but not the teacher's training noise, which the students show to be about half a
    point a run, so it supports no claim either way and the sentence says so."""
    budget, arm = f"{int(row[M.LABELED_COUNT]):,}", row[ARM]
    if np.isnan(row[DIFF]):
        return (f"At {budget} labels {arm} reached {row[arm]:.1%} and random {row[BASELINE]:.1%}; "
                "no per-example logits for this round, so no interval and no claim.")
    pts = f"{100 * row[DIFF]:+.1f} points ({CONFIDENCE:.0%} CI {100 * row[CI_LOW]:+.1f} to {100 * row[CI_HIGH]:+.1f})"
    return (f"At {budget} labels {arm} minus random: {pts} over the validation examples, from one "
            "teacher seed per arm: the interval leaves out the teacher's training noise, so one seed "
            "cannot support a claim either way.")
