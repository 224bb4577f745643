"""The study as DataFrames, for notebooks: ``raydistill.results("runs/x")``. Reads the files the
report wrote (no Ray, no model, no resampling: well under a second); a run without a report is
analysed on the spot. The same numbers the report and the CLI print; accuracies, differences,
intervals and the margin are fractions (0.01 = 1 point)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from raydistill.platform.bench_format import split_key
from raydistill.platform.report.active_learning import al_comparison, read_al_curve
from raydistill.platform.report.assemble import UNITS, analyse
from raydistill.platform.report.render import verdict_sentence
from raydistill.platform.rundir import RunDir


@dataclass(frozen=True)
class StudyResults:
    """One run's results. Empty frames where a stage has not run (no AL arms, no bench)."""

    trials: pd.DataFrame  # one row per trial: strategy, temperature, seed, status, val_accuracy, ...
    cells: pd.DataFrame  # one row per (strategy, T): mean ± std, retained, diff vs best, verdict
    verdict: str  # the one sentence the report and the CLI print
    strategies: pd.DataFrame  # one row per strategy, temperatures pooled: diff vs best, verdict
    confirmation: pd.DataFrame  # per strategy: validation verdict, confirmation interval and verdict
    margin: float  # a fraction (0.01 = 1 point): an interval inside ±margin is `equivalent`
    units: str  # what the numbers are
    al_curve: pd.DataFrame  # acquisition, round, labeled_count, val_accuracy, ...
    al_vs_random: pd.DataFrame  # per budget: each arm, the difference, its 95% CI, a sentence
    bench: pd.DataFrame  # per (kind, level, texts a request, model, stack): texts/s, latencies


def results(run_dir: str | Path) -> StudyResults:
    """Everything a run measured, as DataFrames: from the report's files when ``raydistill
    report`` (or ``run``) wrote them, else analysed now. Raises CheckpointError when ``run_dir``
    is not a run directory or has no sweep results."""
    run = RunDir.existing(run_dir)
    has_curve = run.al_curve.is_file()
    common = {"al_curve": read_al_curve(run.al_curve) if has_curve else pd.DataFrame(),
              "al_vs_random": al_comparison(run.root) if has_curve else pd.DataFrame(),
              "bench": bench_frame(run.bench_json)}
    if run.study_json.is_file() and run.summary_csv.is_file() and run.results_csv.is_file():
        facts = json.loads(run.study_json.read_text(encoding="utf-8"))
        return StudyResults(trials=pd.read_csv(run.results_csv), cells=pd.read_csv(run.summary_csv),
                            verdict=facts["verdict"], strategies=_optional_csv(run.strategies_csv),
                            confirmation=_optional_csv(run.confirmation_csv), margin=facts["margin"],
                            units=facts["units"], **common)
    study = analyse(run.root)
    return StudyResults(
        trials=study.trials, cells=study.cells, verdict=verdict_sentence(study.cells),
        strategies=study.layer.strategies if study.layer else pd.DataFrame(),
        confirmation=study.confirmation.strategies if study.confirmation else pd.DataFrame(),
        margin=study.margin, units=UNITS, **common)


def _optional_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def bench_frame(path: Path) -> pd.DataFrame:
    """``bench.json`` flattened: one row per in-process batch size and model, and per HTTP
    concurrency, texts per request, model and stack (batched / per_request)."""
    if not path.is_file():
        return pd.DataFrame()
    bench = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for level in bench.get("in_process", []):
        for model, figures in level.items():
            if isinstance(figures, dict):
                rows.append({"kind": "in_process", "level": level["batch_size"], "model": model,
                             "stack": "in_process", "texts_per_s": figures["texts_per_s"]})
    for level in bench.get("http", []):
        for key, figures in level.items():
            if isinstance(figures, dict):
                model, stack = split_key(key)
                rows.append({"kind": "http", "level": level["concurrency"], "model": model, "stack": stack,
                             "texts_per_request": level.get("texts_per_request", 1),
                             "texts_per_s": figures["texts_per_s"], "p50_ms": figures.get("p50_ms"),
                             "p95_ms": figures.get("p95_ms"), "p99_ms": figures.get("p99_ms"),
                             "errors": figures.get("errors")})
    return pd.DataFrame(rows)
