"""The run's files -> report.md, the table, the verdict sentence, the test figures, AL vs random."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raydistill.platform import metrics as M
from raydistill.platform import report as R
from raydistill.platform.errors import CheckpointError
from raydistill.platform.export import Provenance, read_provenance, write_provenance
from raydistill.platform.report import stats as S
from raydistill.platform.rundir import (
    PLOT_ACTIVE_LEARNING,
    PLOT_LEARNING_CURVES,
    PLOT_VAL_ACCURACY,
    RunDir,
    save_array,
)

pytestmark = pytest.mark.unit


def test_format_table_rows(fx) -> None:
    summary = R.summarize(fx.make_frame(fx.CELLS), teacher_accuracy=fx.TEACHER_VAL_ACC, majority_accuracy=0.5)
    lines = R.format_table(summary, {M.ACCURACY: fx.TEACHER_VAL_ACC, M.PARAMS: 12345}).splitlines()
    assert [c.strip() for c in lines[0].split("|")[1:-1]] == [
        "strategy", "T", "train loss", "val loss", "val acc mean ± std", "n", "retained", "retained gain",
        "fidelity", "params", "vs best, points [95% CI]", "p (Holm)", "verdict"]
    assert len(lines) == 2 + len(fx.CELLS) + 1
    first = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert first == ["top", "2", "0.4000", "0.6000", "0.7900 ± 0.0100", "3", "87.8%", "72.5%", "0.900",
                     "1,000", "—", "—", "best"]
    last = [c.strip() for c in lines[5].split("|")[1:-1]]
    assert last[:2] == ["bottom", "4"] and last[10].startswith("-18.5 [") and last[12] == S.WORSE
    assert lines[-1].startswith("| teacher |") and "0.9000" in lines[-1] and "12,345" in lines[-1]


def test_verdict_sentence_follows_the_verdict_column(fx) -> None:
    noisy = R.summarize(fx.make_frame({("top", 2.0): [0.80, 0.70, 0.75], ("odd", 2.0): [0.74, 0.76, 0.72]}))
    text = R.verdict_sentence(noisy)
    assert text.startswith("top T=2 (0.7500 ± 0.0500) has the highest mean, not a winner: of the 1 other cells "
                           "0 worse, 0 equivalent, 1 inconclusive (margin ±1 point(s), validation, exploratory)")
    far = R.summarize(fx.make_frame({("top", 2.0): [0.80, 0.81, 0.80], ("odd", 2.0): [0.50, 0.51, 0.52]}))
    assert R.verdict_sentence(far).startswith("top T=2 (0.8033 ± 0.0058) is better than every other cell")
    mixed = R.summarize(fx.make_frame({("top", 2.0): [0.80, 0.79, 0.81], ("odd", 2.0): [0.795, 0.80, 0.79],
                                       ("even", 2.0): [0.70, 0.71, 0.69]}))
    assert "of the 2 other cells 1 worse (even T=2), 0 equivalent, 1 inconclusive" in R.verdict_sentence(mixed)
    close = R.summarize(fx.make_frame({("top", 2.0): [0.800, 0.801, 0.802], ("odd", 2.0): [0.799, 0.800, 0.801]}),
                        margin=0.02)
    assert "1 equivalent (odd T=2)" in R.verdict_sentence(close) and "±2 point(s)" in R.verdict_sentence(close)
    one_seed = R.summarize(fx.make_frame({("top", 2.0): [0.8], ("odd", 2.0): [0.7]}))
    assert R.verdict_sentence(one_seed).startswith("Not tested")


def test_write_report_from_a_run_directory(run: RunDir, fx) -> None:
    path = R.write_report(run.root)
    assert path == run.report
    text = path.read_text()
    assert "Exported student: the cell with the best mean validation accuracy over seeds, **top**, T=2" in text
    assert "**Verdict:** top T=2 (0.7900 ± 0.0100) has the highest mean, not a winner: of the 3 other cells" in text
    assert f"Inference: {S.POLICY}." in text and "20 film clusters of the 200 validation examples" in text
    # the confirmation: the same policy on the 80 test examples no choice saw, best fixed
    conf = text.split("## Confirmation on test examples no choice has seen")[1].split("\n## ")[0]
    assert "on 80 test examples (8 film clusters; 20 test examples that an earlier validation split held" in conf
    assert "| top | best | — | best | — |" in conf and "| bottom | inconclusive | -14.2 points [" in conf
    # bottom T=4, worse on validation, is worse on the confirmation set too: it replicates
    assert "Strategies: 0 of 0 validation findings replicate; cells: 1 of 1." in conf
    assert "No contrast was declared before the run (report.confirm)" in conf
    assert "## Strategies, temperatures pooled (validation)" in text and "| top | 6 |" in text
    assert "Temperature: T=4 minus T=2" in text and "Strategy × temperature interaction: p = " in text
    assert "![each cell and strategy against the best](plots/forest.png)" in text
    assert (run.plots / "forest.png").read_bytes()[:4] == b"\x89PNG"
    assert "| teacher |" in text and f"{fx.TEACHER_VAL_ACC:.4f}" in text
    # Test figures: the winning cell's seeds (mean ± std), the exported seed, the teacher.
    acc = f"{np.mean(fx.WINNER_TEST):.4f} ± {np.std(fx.WINNER_TEST, ddof=1):.4f}"
    assert f"| winning cell, mean ± std over 3 seeds | {acc} |" in text
    assert "| exported student (seed 0, best validation) | 0.8100 |" in text and "| teacher | 0.8800 |" in text
    assert "Exported student's per-class F1 (test): negative" in text
    assert "Note: the exported student" not in text  # provenance agrees with the best-mean cell
    section = text.split("## Trials not averaged")[1]
    assert "RuntimeError: CUDA out of memory" in section and "| STOPPED_EARLY | 2/3 |" in section
    assert "| ERROR | 1/3 | RuntimeError" in section and "ran 2 of 3 epochs |" in section
    assert "ran 0 of 3 epochs (Tune status PENDING: the sweep did not finish)" in section
    assert "12 completed, 1 in error, 2 stopped early" in text and "Duplicates ignored" not in text
    assert "| 200 | 0.7600 | 0.7000 |" in text  # the AL table: entropy vs random at 200 labels
    assert "- At 200 labels entropy minus random: +6.0 points (95% CI" in text

    results, summary = pd.read_csv(run.results_csv), pd.read_csv(run.summary_csv)
    assert len(results) == 15 and set(results["status"]) == {R.COMPLETED, R.ERRORED, R.STOPPED_EARLY}
    # the run refers to itself relatively: a copied run's report and CSV stay true
    assert str(run.root) not in text and str(run.root) not in run.results_csv.read_text()
    assert all((run.root / d).is_dir() for d in results["trial_dir"].dropna())
    assert len(summary) == 4 and summary[S.CI_LOW].notna().sum() == 3
    assert list(summary[S.VERDICT]) == [S.BEST, S.INCONCLUSIVE, S.INCONCLUSIVE, S.WORSE]
    for name in (PLOT_VAL_ACCURACY, PLOT_LEARNING_CURVES, PLOT_ACTIVE_LEARNING):
        png = (run.plots / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_test_figures_fall_back_to_the_exported_student(run: RunDir) -> None:
    for path in run.tune_experiment.glob("*/test_logits.npy"):
        path.unlink()
    text = R.write_report(run.root).read_text()
    assert "winning cell, mean ± std" not in text
    assert "| exported student (seed 0, best validation) | 0.8100 |" in text
    assert "the exported seed stands for the cell" in text


def test_write_report_without_optional_files_and_with_no_completed_trial(tmp_path, fx) -> None:
    run = fx.make_run(tmp_path / "bare", extras=False, files=False)
    text = R.write_report(run.root).read_text()
    assert "seeds only (no val_logits.npy" in text and "Not available" in text
    assert not (run.plots / PLOT_ACTIVE_LEARNING).exists()
    assert (run.plots / PLOT_VAL_ACCURACY).stat().st_size > 0

    failed = fx.make_run(tmp_path / "failed", cells={}, files=False)
    text = R.write_report(failed.root).read_text()
    assert "No trial completed" in text and "RuntimeError: CUDA out of memory" in text


def test_report_notes_an_exported_student_that_is_not_the_best_cell(run: RunDir) -> None:
    write_provenance(run.student, Provenance(role="student", num_layers=6, teacher_num_layers=12,
                                             strategy="bottom", temperature=4.0))
    text = R.write_report(run.root).read_text()
    assert "Note: the exported student is bottom T=4.0, not this report's best-mean cell top T=2." in text


def test_logits_that_do_not_match_the_labels_are_a_clear_error(run: RunDir) -> None:
    save_array(run.student_logits("test"), np.zeros((7, 2), np.float32))
    with pytest.raises(CheckpointError, match=r"student/test_logits.npy has shape \(7, 2\)"):
        R.write_report(run.root)


def test_al_comparison_per_budget_with_paired_intervals(run: RunDir) -> None:
    table = R.al_comparison(run.root).set_index(M.LABELED_COUNT)
    assert list(table.index) == [100, 150, 200]
    assert table.loc[200, "entropy"] == pytest.approx(0.76) and table.loc[200, "random"] == pytest.approx(0.70)
    assert table.loc[200, "diff_vs_random"] == pytest.approx(0.06)
    assert 0 < table.loc[200, "ci_low"] <= 0.06 <= table.loc[200, "ci_high"]
    assert table.loc[200, "sentence"].startswith("At 200 labels entropy minus random: +6.0 points (95% CI +")
    assert table.loc[200, "sentence"].endswith("one seed cannot support a claim either way.")
    # Round 0 is one model shared by both arms: the sentence says so instead of comparing it.
    assert table.loc[100, "diff_vs_random"] == 0
    assert table.loc[100, "sentence"] == ("At 100 labels both arms are the same round-0 model "
                                          "(the shared initial set): 61.0%.")


def test_al_comparison_without_round_logits_claims_nothing(run: RunDir, tmp_path) -> None:
    for path in run.al.glob("*/val_logits_round*.npy"):
        path.unlink()
    table = R.al_comparison(run.root)
    assert table["diff_vs_random"].isna().all()
    assert "no per-example logits for this round, so no interval and no claim" in table["sentence"].iloc[-1]
    R.plot_active_learning(run.al_curve, tmp_path / "curve.png", table)  # no band, still a plot
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_active_learning_takes_the_curve_file(run: RunDir, tmp_path) -> None:
    R.plot_active_learning(run.al_curve, tmp_path / "curve.png")  # as the pipeline calls it
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    run.al_curve.write_text("round,val_accuracy\n0,0.5\n")
    with pytest.raises(CheckpointError, match=r"lacks columns \['acquisition', 'labeled_count'\]"):
        R.plot_active_learning(run.al_curve, tmp_path / "bad.png")
    assert "## Active learning\n\nSkipped:" in R.write_report(run.root).read_text()


def test_results_api_gives_the_study_as_dataframes(run: RunDir) -> None:
    """``raydistill.results(run_dir)``: the same trials, cells, verdict and AL comparison the
    report is built from, plus the bench flattened, with no Ray."""
    import raydistill

    bench = {"in_process": [{"batch_size": 32, "student": {"texts_per_s": 140.0}, "teacher": {"texts_per_s": 70.0},
                             "student_vs_teacher": 2.0}],
             "http": [{"concurrency": 32, "student_batched": {"texts_per_s": 42.0, "p50_ms": 700.0, "errors": 0},
                       "teacher_per_request": {"texts_per_s": 22.0, "p50_ms": 1300.0, "errors": 0},
                       "student_vs_teacher": 1.6}]}
    run.bench_json.write_text(json.dumps(bench))
    out = raydistill.results(run.root)  # no report yet: analysed on the spot
    trials, cells, _ = R.study_summary(run.root)
    pd.testing.assert_frame_equal(out.trials, trials)
    pd.testing.assert_frame_equal(out.cells, cells)
    assert out.verdict == R.verdict_sentence(cells) and out.margin == 0.01 and "fractions" in out.units
    assert list(out.strategies["strategy"]) == ["top", "bottom"] and len(out.confirmation) == 2
    # after the report: read back from its files, the same figures, no resampling
    R.write_report(run.root)
    import time

    started = time.perf_counter()
    again = raydistill.results(run.root)
    assert time.perf_counter() - started < 1.0
    assert again.verdict == out.verdict and list(again.cells["verdict"]) == list(cells["verdict"])
    assert again.cells["ci_low"].tolist() == pytest.approx(cells["ci_low"].tolist(), nan_ok=True)
    assert list(again.strategies["verdict"]) == list(out.strategies["verdict"])
    assert "results" in dir(raydistill) and "results" in raydistill.__all__
    assert list(out.al_vs_random[M.LABELED_COUNT]) == [100, 150, 200]
    assert set(out.al_curve["acquisition"]) == {"entropy", "random"}
    rows = out.bench.set_index(["kind", "level", "model", "stack"])["texts_per_s"].to_dict()
    assert rows == {("in_process", 32, "student", "in_process"): 140.0, ("in_process", 32, "teacher", "in_process"): 70.0,
                    ("http", 32, "student", "batched"): 42.0, ("http", 32, "teacher", "per_request"): 22.0}


def test_results_api_refuses_a_non_run_directory(tmp_path) -> None:
    import raydistill

    with pytest.raises(CheckpointError, match="not a run directory"):
        raydistill.results(tmp_path)


def test_a_teacher_at_the_majority_rate_heads_the_report_and_crowns_no_winner(run: RunDir) -> None:
    labels = np.load(run.eval_labels("validation"))
    majority = np.bincount(labels).argmax()
    save_array(run.teacher_logits("validation"), np.eye(2, dtype=np.float32)[np.full(len(labels), majority)])
    lines = R.write_report(run.root).read_text().splitlines()
    assert lines[2].startswith("**Nothing below can be trusted: the teacher (0.") and lines[2].endswith("No winner is named.**")
    verdict = next(line for line in lines if line.startswith("**Verdict:**"))
    assert verdict == "**Verdict:** " + lines[2].strip("*")
    assert R.results(run.root).verdict == lines[2].strip("*")


def test_the_exported_models_carry_hub_model_cards(run: RunDir) -> None:
    from huggingface_hub import ModelCard

    (run.student / "config.json").write_text("{}")
    (run.teacher / "config.json").write_text("{}")
    card = read_provenance(run.student).model_copy(update={
        "validation": {"accuracy": 0.8}, "test": {"accuracy": 0.81}, "cell_test_accuracy_std": 0.01})
    write_provenance(run.student, card)
    R.write_report(run.root)
    student = ModelCard.load(run.student / "README.md")
    assert student.data.pipeline_tag == "text-classification" and "knowledge-distillation" in student.data.tags
    assert [(r.metric_type, r.metric_value) for r in student.data.eval_results] == [("accuracy", 0.8), ("accuracy", 0.81)]
    assert "test accuracy: 0.8100 (its cell: ± 0.0100 over seeds)" in student.text
    assert "strategy top, teacher layers [6, 7, 8, 9, 10, 11]" in student.text
    assert "## The study's verdict" in student.text and "has the highest mean" in student.text
    teacher = ModelCard.load(run.teacher / "README.md")
    assert [r.metric_value for r in teacher.data.eval_results] == [0.9, 0.88]  # validation, test
    assert 'pipeline("text-classification"' in teacher.text
