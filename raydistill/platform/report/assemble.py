"""A run directory's files -> ``report.md``, ``results.csv``, ``summary.csv`` and ``plots/*.png``.

Reads only what the stages wrote (no training, no Ray): Tune's trial files, the labels, the
teacher's and the students' saved logits, the exported student's provenance, the AL curve.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydistill.platform import metrics as M
from raydistill.platform.errors import CheckpointError
from raydistill.platform.export import Provenance, read_provenance
from raydistill.platform.report import bootstrap as B
from raydistill.platform.report import render as R
from raydistill.platform.report import stats as S
from raydistill.platform.report.active_learning import (
    SENTENCE,
    al_comparison,
    read_al_curve,
)
from raydistill.platform.report.baseline import (
    TeacherCheck,
    check_teacher,
    untrusted_line,
)
from raydistill.platform.report.confirmation import (
    CONTRAST,
    REPLICATES,
    VALIDATION_VERDICT,
    Confirmation,
    confirm,
)
from raydistill.platform.report.model_card import model_card
from raydistill.platform.report.plots import (
    plot_active_learning,
    plot_forest,
    plot_learning_curves,
    plot_val_accuracy,
)
from raydistill.platform.report.run_files import (
    count_safetensors_params,
    optional_array,
    optional_json,
    optional_logits,
    read_run_config,
)
from raydistill.platform.report.strategies import LayerQuestion, layer_question
from raydistill.platform.report.trials import (
    COMPLETED,
    DUPLICATE,
    ERRORED,
    STOPPED_EARLY,
    completed,
    load_history,
    load_results,
    not_completed,
)
from raydistill.platform.rundir import (
    PLOT_ACTIVE_LEARNING,
    PLOT_FOREST,
    PLOT_LEARNING_CURVES,
    PLOT_VAL_ACCURACY,
    TEST_LOGITS,
    VAL_LOGITS,
    RunDir,
    atomic_write_text,
    has_model,
)


def majority_accuracy(labels: np.ndarray | None) -> float | None:
    """The majority-class baseline: the rate of the most frequent label, or None without labels."""
    if labels is None or len(labels) == 0:
        return None
    return float(np.bincount(np.asarray(labels, dtype=np.int64)).max() / len(labels))


def _teacher_val(run: RunDir, labels: np.ndarray | None) -> dict[str, Any] | None:
    if labels is None:
        return None
    logits = optional_logits(run.teacher_logits("validation"), len(labels), run.eval_labels("validation"))
    if logits is None:
        return None
    out: dict[str, Any] = M.evaluate(logits, labels)
    out[M.PARAMS] = count_safetensors_params(run.teacher)
    return out


def run_config(run: RunDir) -> Any:
    """The run's config, or None when it cannot be read (a hand-made or damaged run)."""
    from raydistill.platform.config import config_from_dict
    from raydistill.platform.errors import ConfigError

    try:
        return config_from_dict(read_run_config(run.root))
    except ConfigError:
        return None


def report_settings(cfg: Any) -> Any:
    """The ``report`` section (margin, declared contrasts) of a run's config; the defaults when
    the config could not be read (None)."""
    from raydistill.platform.config import ReportConfig

    return cfg.report if cfg is not None else ReportConfig()


def evidence(run: RunDir, split: str) -> S.Evidence | None:
    """The split's labels with each example's cluster (when the data stage recorded them)."""
    labels = optional_array(run.eval_labels(split))
    if labels is None:
        return None
    logits_file = VAL_LOGITS if split == "validation" else TEST_LOGITS
    groups = optional_array(run.eval_groups(split))
    if groups is None or len(groups) != len(labels):
        return S.Evidence(labels, logits_file=logits_file)
    unit = (optional_json(run.clusters) or {}).get("unit", "cluster")
    return S.Evidence(labels, groups, str(unit), logits_file)


def teacher_check(run: RunDir, val: S.Evidence | None = None) -> TeacherCheck | None:
    """The teacher's validation accuracy against the majority class, paired over the clusters;
    None without its validation logits. ``val``: the validation evidence, when already read."""
    val = val if val is not None else evidence(run, "validation")
    if val is None:
        return None
    logits = optional_logits(run.teacher_logits("validation"), len(val.labels), run.eval_labels("validation"))
    return None if logits is None else check_teacher(logits, val.labels, val.groups)


def study_summary(run_dir: str | Path, margin: float | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any] | None]:
    """(per-trial results, per-cell summary with the policy's verdicts, the teacher's
    validation metrics or None): everything the study's table needs, from disk. Reads Tune's
    trial files, each trial's val_logits.npy, labels/validation.npy (and the clusters) and the
    teacher's validation logits. ``margin`` (a fraction) defaults to the run's report.margin.
    Raises CheckpointError when the run has no sweep results."""
    run = RunDir(run_dir)
    df = load_results(run.root)
    val = evidence(run, "validation")
    labels = None if val is None else val.labels
    teacher = _teacher_val(run, labels)
    margin = report_settings(run_config(run)).margin_fraction if margin is None else margin
    summary = S.summarize(df, teacher[M.ACCURACY] if teacher else None, majority_accuracy(labels), val,
                          margin=margin)
    summary.attrs["untrusted"] = untrusted_line(teacher_check(run, val))
    return df, summary, teacher


@dataclass(frozen=True)
class Study:
    """A run's study, as the report, ``raydistill.results`` and ``/v1/results`` all show it."""

    trials: pd.DataFrame
    cells: pd.DataFrame
    teacher: dict[str, Any] | None
    layer: LayerQuestion | None
    confirmation: Confirmation | None
    config: Any  # the run's ExperimentConfig, None when it could not be read
    settings: Any  # its report section (the defaults without a config)

    @property
    def margin(self) -> float:
        """A fraction, like every accuracy and difference (0.01 = 1 point)."""
        return self.settings.margin_fraction


def analyse(run_dir: str | Path) -> Study:
    """The cells, the strategies and the confirmation of a run, from disk (its config read
    once). Raises CheckpointError when the run has no sweep results."""
    run = RunDir(run_dir)
    cfg = run_config(run)
    settings = report_settings(cfg)
    trials, cells, teacher = study_summary(run.root, settings.margin_fraction)
    layer = layer_question(cells, settings.margin_fraction)
    return Study(trials, cells, teacher, layer, _confirmation(run, trials, cells, layer, settings), cfg, settings)


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md``, ``results.csv``, ``summary.csv`` and ``plots/*.png`` into the run
    directory from the files already there. Returns the report's path. Raises CheckpointError
    when the run has no sweep results."""
    run = RunDir(run_dir)
    study = analyse(run.root)
    df, summary, teacher, layer, settings = study.trials, study.cells, study.teacher, study.layer, study.settings
    winner = S.choose_winner(summary) if not summary.empty else None
    atomic_write_text(run.results_csv, _relative_trial_dirs(df, run.root).to_csv(index=False))
    atomic_write_text(run.summary_csv, summary.to_csv(index=False))
    _write_study_files(run, study)
    lines = _header(run, df, summary.attrs.get("untrusted")) + _study_section(summary, teacher) + _strategy_section(layer)
    lines += _confirmation_section(study.confirmation, settings)
    lines += _test_section(run, df, winner)
    lines += _failed_section(df) + R.duplicates_note(df)
    al_lines, curve, comparison = _al_section(run)
    lines += al_lines
    if not summary.empty:
        plot_forest(summary, None if layer is None else layer.strategies, run.plot(PLOT_FOREST), study.margin)
        plot_val_accuracy(summary, run.plot(PLOT_VAL_ACCURACY), teacher[M.ACCURACY] if teacher else None)
        hist = load_history(run.root)
        plot_learning_curves(hist[hist[M.TRIAL_ID].isin(completed(df)[M.TRIAL_ID])],
                             run.plot(PLOT_LEARNING_CURVES))
    if curve is not None:
        plot_active_learning(curve, run.plot(PLOT_ACTIVE_LEARNING), comparison)
    atomic_write_text(run.report, "\n".join(lines) + "\n")
    _write_model_cards(run, study)
    return run.report


def _write_study_files(run: RunDir, study: Study) -> None:
    """What ``raydistill.results`` reads back without recomputing: the strategy table, the
    confirmation, and the sentences and settings (``study.json``)."""
    strategies = study.layer.strategies if study.layer is not None else pd.DataFrame()
    atomic_write_text(run.strategies_csv, strategies.to_csv(index=False))
    confirmation = study.confirmation.strategies if study.confirmation is not None else pd.DataFrame()
    atomic_write_text(run.confirmation_csv, confirmation.to_csv(index=False))
    facts = {"verdict": R.verdict_sentence(study.cells),
             "strategy_verdict": R.strategy_sentence(strategies) if study.layer is not None else None,
             "margin": study.margin, "units": UNITS}
    atomic_write_text(run.study_json, json.dumps(facts, indent=1))


UNITS = "accuracies, differences, intervals and the margin are fractions (0.01 = 1 point)"


def _write_model_cards(run: RunDir, study: Study) -> None:
    """``README.md`` in the exported teacher/ and student/ folders (Hub format)."""
    cfg = study.config
    if cfg is None:
        return
    verdict = R.verdict_sentence(study.cells)
    student, teacher = read_provenance(run.student), read_provenance(run.teacher)
    if has_model(run.student) and student is not None:
        how = (f"A {student.num_layers}-layer student distilled from the study's teacher (Hinton KD, "
               f"T={student.temperature}, seed {student.seed}): the best-validation seed of the cell with the "
               "best mean validation accuracy.")
        atomic_write_text(run.model_card("student"), model_card(cfg, student, verdict, how))
    if has_model(run.teacher) and teacher is not None:
        how = (f"The study's teacher, fine-tuned with active learning ({cfg.al.acquisition}, "
               f"{cfg.al.initial_labeled:,} initial labels, {cfg.al.rounds} round(s) of {cfg.al.query_size:,}).")
        atomic_write_text(run.model_card("teacher"), model_card(cfg, teacher, verdict, how))


def _relative_trial_dirs(df: pd.DataFrame, root: Path) -> pd.DataFrame:
    """results.csv names trial folders relative to the run, so a copied run stays true."""
    def relative(d: Any) -> Any:
        return os.path.relpath(d, root) if isinstance(d, str) else d

    return df.assign(trial_dir=df["trial_dir"].map(relative)) if "trial_dir" in df else df


def _header(run: RunDir, df: pd.DataFrame, untrusted: str | None) -> list[str]:
    """The title, then (first) the line saying nothing can be trusted when the teacher failed
    its check, then the trial counts."""
    name = read_run_config(run.root).get("name", run.root.name)
    counts = df["status"].value_counts()
    dup = f", {counts.get(DUPLICATE, 0)} duplicates ignored" if counts.get(DUPLICATE, 0) else ""
    warning = [f"**{untrusted}**", ""] if untrusted else []
    return [f"# raydistill report: {name}", "", *warning, f"Run directory: `{run.root.name}`", "",
            f"Trials: {len(df)} ({counts.get(COMPLETED, 0)} completed, {counts.get(ERRORED, 0)} "
            f"in error, {counts.get(STOPPED_EARLY, 0)} stopped early{dup}). Only completed trials "
            "are averaged.", ""]


def _study_section(summary: pd.DataFrame, teacher: dict[str, Any] | None) -> list[str]:
    out = ["## Students: strategy × temperature (validation, mean ± std over seeds)", ""]
    if summary.empty:
        return out + ["No trial completed: there is no table and no exported student.", ""]
    best = summary[summary[S.VERDICT] == S.BEST].iloc[0]
    out += [R.format_table(summary, teacher), "", f"**Verdict:** {R.verdict_sentence(summary)}", "",
            f"Exported student: the cell with the best mean validation accuracy over seeds, "
            f"**{best[M.STRATEGY]}**, T={best[M.TEMPERATURE]:g}, {R.fmt_acc(best[S.VAL_ACC_MEAN], best[S.VAL_ACC_STD])} "
            f"over {best[S.N]} seeds, layers {best[M.LAYERS]} (its best-validation seed; see the test set).",
            "", R.policy_note(summary), "",
            "`retained` is the cell's share of the teacher's validation accuracy; `retained gain` its "
            "share of the teacher's gain over the majority-class baseline."]
    return out + ["", f"![each cell and strategy against the best](plots/{PLOT_FOREST})",
                  f"![validation accuracy](plots/{PLOT_VAL_ACCURACY})",
                  f"![learning curves](plots/{PLOT_LEARNING_CURVES})", ""]


def _strategy_section(layer: LayerQuestion | None) -> list[str]:
    """The layer question per strategy: temperatures pooled, the temperature's own effect, the
    interaction check."""
    if layer is None:
        return []
    out = ["## Strategies, temperatures pooled (validation)", "",
           "Each strategy's mean over all its runs (its cells weigh the same), against the best "
           "strategy by the same policy and margin.", "", R.strategy_table(layer.strategies), "",
           f"**{R.strategy_sentence(layer.strategies)}**", ""]
    for t in layer.temperature:
        out.append(f"Temperature: T={t.high:g} minus T={t.low:g}, over the strategies that ran both: "
                   f"{R.interval(t.diff, t.ci_low, t.ci_high)} ({S.CONFIDENCE}, not adjusted: one planned question).")
    if np.isfinite(layer.interaction_p):
        if layer.interaction_is_real:
            out.append(f"Strategy × temperature interaction: p = {layer.interaction_p:.3g}, real: a strategy's "
                       "rank depends on the temperature, so the pooled row should not be read alone; read "
                       "the cells above.")
        else:
            out.append(f"Strategy × temperature interaction: p = {layer.interaction_p:.3g}, not shown: the "
                       "pooled rows answer the layer question.")
    return out + [""]


def _confirmation(run: RunDir, df: pd.DataFrame, summary: pd.DataFrame, layer: LayerQuestion | None,
                  settings: Any) -> Confirmation | None:
    test = evidence(run, "test")
    keep = optional_array(run.confirmation_mask)
    if test is None or summary.empty:
        return None
    keep = np.ones(len(test.labels), bool) if keep is None or len(keep) != len(test.labels) else keep.astype(bool)
    return confirm(df, summary, layer, test, keep, list(settings.confirm), settings.margin_fraction)


def _confirmation_section(conf: Confirmation | None, settings: Any) -> list[str]:
    out = ["## Confirmation on test examples no choice has seen", ""]
    if conf is None:
        return out + ["Not available: the trials hold no test logits (a sweep from before they were "
                      "written) or the run has no test labels. Every verdict above is exploratory.", ""]
    left = (f"; {conf.left_out:,} test examples that an earlier validation split held are left out"
            if conf.left_out else "")
    unit = f"{conf.clusters:,} {conf.unit} clusters" if conf.unit != B.ROWS else "rows resampled"
    out += [f"Validation is where recipes were chosen, so its verdicts are exploratory. The same policy "
            f"re-tests them on {conf.examples:,} test examples ({unit}{left}), with the best cell and "
            "strategy fixed to validation's.", ""]
    val = conf.strategies[VALIDATION_VERDICT]
    found = conf.strategies[val.isin([S.WORSE, S.EQUIVALENT])]
    held = found[found[REPLICATES] == "yes"]
    cells_found = conf.cells[conf.cells[REPLICATES] != "—"]
    out += [f"Strategies: {len(held)} of {len(found)} validation findings replicate"
            + (f" ({', '.join(f'{s} {v}' for s, v in zip(held[M.STRATEGY], held[S.VERDICT]))})" if len(held) else "")
            + f"; cells: {(cells_found[REPLICATES] == 'yes').sum()} of {len(cells_found)}.", "",
            f"| strategy | validation | confirmation, points [{S.CONFIDENCE} CI] | confirmation | replicates |",
            "|---|---|---|---|---|"]
    for _, r in conf.strategies.iterrows():
        diff = "—" if r[S.VERDICT] == S.BEST else R.interval(r[S.DIFF], r[S.CI_LOW], r[S.CI_HIGH])
        out.append(f"| {r[M.STRATEGY]} | {r[VALIDATION_VERDICT]} | {diff} | {r[S.VERDICT]} | {r[REPLICATES]} |")
    out.append("")
    if not settings.confirm:
        return out + ["No contrast was declared before the run (report.confirm): every finding here is "
                      "exploratory.", ""]
    out += [f"Declared before the run (report.confirm), Bonferroni over {len(settings.confirm)}: the "
            "confirmatory claims.", "", "| contrast | validation (exploratory) | confirmation | verdict |",
            "|---|---|---|---|"]
    for _, r in conf.declared.iterrows():
        out.append(f"| {r[CONTRAST]} | {R.interval(r['validation_' + S.DIFF], r['validation_' + S.CI_LOW], r['validation_' + S.CI_HIGH])} "
                   f"{r['validation_' + S.VERDICT]} | {R.interval(r[S.DIFF], r[S.CI_LOW], r[S.CI_HIGH])} | **{r[S.VERDICT]}** |")
    return out + [""]


def _test_section(run: RunDir, df: pd.DataFrame, winner: tuple[str, float] | None) -> list[str]:
    """The winning cell's test metrics (mean ± std over its seeds), the exported seed's and
    the teacher's: chosen on validation, reported on test."""
    out = ["## Test set (the cell was chosen on validation)", ""]
    labels_path = run.eval_labels("test")
    labels = optional_array(labels_path)
    if labels is None:
        return out + [f"Not available: {labels_path} is missing.", ""]
    seeds = _winner_test_logits(df, winner, labels, labels_path)
    exported = optional_logits(run.student_logits("test"), len(labels), labels_path)
    teacher = optional_logits(run.teacher_logits("test"), len(labels), labels_path)
    if not seeds and exported is None and teacher is None:
        return out + [f"Not available: no {TEST_LOGITS} in the winning cell's trials, no "
                      f"{run.student_logits('test')} and no teacher test logits.", ""]
    card = read_provenance(run.student)
    out += _provenance_note(card, winner)
    out += [f"| model | test accuracy | macro-F1 | ECE ({M.ECE_BINS} bins) | agreement with teacher | params |",
            "|" + "---|" * 6]
    student_params = count_safetensors_params(run.student)
    if seeds:
        out.append(_seeds_row(f"winning cell, mean ± std over {len(seeds)} seeds", seeds, labels, teacher,
                              student_params))
    seed = None if card is None else card.seed
    name = f"exported student (seed {seed}, best validation)" if seed is not None else "exported student"
    for label, logits, params in [(name, exported, student_params),
                                  ("teacher", teacher, count_safetensors_params(run.teacher))]:
        if logits is not None:
            out.append(_seeds_row(label, [logits], labels, teacher, params))
    if not seeds and exported is not None:
        out += ["", f"The winning cell's trials hold no {TEST_LOGITS}: the exported seed stands for the cell."]
    names = optional_json(run.label_names)
    if exported is not None and isinstance(names, list):
        f1 = M.f1_per_class(exported.argmax(1), labels)
        per = ", ".join(f"{names[c] if c < len(names) else c} {v:.3f}" for c, v in f1.items())
        out += ["", f"Exported student's per-class F1 (test): {per}."]
    return out + [""]


def _winner_test_logits(df: pd.DataFrame, winner: tuple[str, float] | None, labels: np.ndarray,
                        labels_path: Path) -> list[np.ndarray]:
    if winner is None:
        return []
    done = completed(df)
    cell = done[(done[M.STRATEGY] == winner[0]) & (done[M.TEMPERATURE] == winner[1])]
    found = [optional_logits(Path(d) / TEST_LOGITS, len(labels), labels_path)
             for d in cell["trial_dir"].dropna()]
    return [f for f in found if f is not None]


def _seeds_row(name: str, logits: list[np.ndarray], labels: np.ndarray, teacher: np.ndarray | None,
               params: int | None) -> str:
    m = [M.evaluate(x, labels, teacher) for x in logits]

    def cell(metric: str) -> str:
        if metric not in m[0]:
            return "—"
        mean, std = M.over_seeds(m, metric)
        return f"{mean:.4f}" + (f" ± {std:.4f}" if len(m) > 1 else "")

    return (f"| {name} | {cell(M.ACCURACY)} | {cell(M.MACRO_F1)} | {cell(M.ECE)} | {cell(M.FIDELITY)} "
            f"| {R.fmt(params, ',d')} |")


def _provenance_note(card: Provenance | None, winner: tuple[str, float] | None) -> list[str]:
    exported = None if card is None else card.cell
    if winner and exported is not None and exported != winner:
        return [f"Note: the exported student is {exported[0]} T={exported[1]}, "
                f"not this report's best-mean cell {winner[0]} T={winner[1]:g}.", ""]
    return []


def _failed_section(df: pd.DataFrame) -> list[str]:
    if not_completed(df).empty:
        return []
    return ["## Trials not averaged (error or stopped early)", "", R.failed_table(df), ""]


def _al_section(run: RunDir) -> tuple[list[str], pd.DataFrame | None, pd.DataFrame | None]:
    if not run.al_curve.is_file():
        return [], None, None
    try:
        curve = read_al_curve(run.al_curve)
        comparison = al_comparison(run.root)
    except CheckpointError as err:  # the AL curve is a side result: note it, keep the report
        return ["## Active learning", "", f"Skipped: {err}.", ""], None, None
    table = curve.pivot_table(index=M.LABELED_COUNT, columns=M.ACQUISITION, values=M.VAL_ACCURACY)
    lines = ["## Active learning (teacher validation accuracy by labelled examples)", "",
             "| labelled | " + " | ".join(table.columns) + " |", "|" + "---|" * (len(table.columns) + 1)]
    for count, row in table.iterrows():
        lines.append(f"| {count} | " + " | ".join(R.fmt(v, ".4f") for v in row) + " |")
    if not comparison.empty:
        lines += ["", f"Against random ({S.CONFIDENCE} paired bootstrap over the validation clusters):", ""]
        lines += [f"- {s}" for s in comparison[SENTENCE]]
    return lines + ["", f"![active learning](plots/{PLOT_ACTIVE_LEARNING})", ""], curve, comparison
