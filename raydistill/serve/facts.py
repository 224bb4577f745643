"""Run facts shown by the service: what ``GET /v1/models`` says about a model besides its size,
and the study that ``GET /v1/results`` and the results page show.

A model's facts are read from the run directory when the app is built, so a model replica needs
no access to the run's bookkeeping files; missing or broken files give ``None``s, never an
error. The study is read by the Gateway when asked (:func:`study_facts`, cached until
:func:`study_signature` changes), from the run directory it serves, without Ray or a model.
"""

import json
import math
from pathlib import Path
from typing import Any

from raydistill.platform.rundir import (
    MODEL_CONFIG, PLOT_ACTIVE_LEARNING, PLOT_AL_TEACHER, PLOT_BENCH, PLOT_FOREST, PLOT_LEARNING_CURVES,
    PLOT_VAL_ACCURACY, TUNE_ERROR, TUNE_EXPERIMENT_STATE, TUNE_RESULT, VAL_LOGITS, RunDir, json_safe,
)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _finite(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def model_facts(run: RunDir, name: str) -> dict[str, Any]:
    """What ``GET /v1/models`` says about a model besides its size: its card (provenance and
    the one evaluation's figures). A missing or broken card gives ``None``s, never an error."""
    from raydistill.platform import metrics as M
    from raydistill.platform.export import read_provenance

    card = read_provenance(run.model(name))
    if card is None:
        return {"strategy": None, "teacher_layers": None, "temperature": None, "provenance": None,
                "validation_accuracy": None, "validation_accuracy_mean_over_seeds": None, M.TEST_ACCURACY: None}
    return {
        "strategy": card.strategy,
        "teacher_layers": card.teacher_layers,
        "temperature": card.temperature,
        "provenance": card.model_dump(mode="json"),
        "validation_accuracy": _finite(card.validation.get(M.ACCURACY)),
        # The student's cell (strategy x temperature) averaged over seeds, when known.
        "validation_accuracy_mean_over_seeds": _finite(card.cell_validation_accuracy),
        M.TEST_ACCURACY: _finite(card.test.get(M.ACCURACY)),
    }


# ---------------------------------------------------------------------------------------------
# The study: what ``GET /v1/results`` and the results page show

NO_STUDY = ("no study results in this run yet: no finished student sweep "
            "(run `raydistill sweep RUN_DIR`, then `raydistill report RUN_DIR`)")


def known_plots(run: RunDir) -> dict[str, tuple[Path, str]]:
    """The run's figures the service may send, by URL name: (path, caption). Only these names
    are ever served, and only where the file exists (see :func:`plot_path`)."""
    from raydistill.platform.report.stats import CONFIDENCE

    return {
        PLOT_FOREST: (run.plot(PLOT_FOREST),
                      f"Each strategy and cell against the best: difference, {CONFIDENCE} interval, ±margin, verdict"),
        PLOT_VAL_ACCURACY: (run.plot(PLOT_VAL_ACCURACY),
                            "Validation accuracy per strategy and temperature (mean ± std over seeds)"),
        PLOT_LEARNING_CURVES: (run.plot(PLOT_LEARNING_CURVES),
                               "Learning curves of the completed trials (mean over seeds and temperatures)"),
        PLOT_ACTIVE_LEARNING: (run.plot(PLOT_ACTIVE_LEARNING),
                               "Active learning: the teacher's validation accuracy by labelled examples"),
        PLOT_AL_TEACHER: (run.al_plot,
                         "Active learning: the teacher's validation accuracy by labelled examples"),
        PLOT_BENCH: (run.plot(PLOT_BENCH), "Serving benchmark: throughput and p99 latency"),
    }


def plot_path(run: RunDir, name: str) -> Path | None:
    """The file of a known plot ``name`` when it exists, else None. ``name`` is looked up, never
    joined to a path: ``../config.yaml`` and the like are simply unknown."""
    known = known_plots(run).get(name)
    return known[0] if known is not None and known[0].is_file() else None


def study_signature(run_dir: str | Path) -> tuple[Any, ...]:
    """Size and modification time of every file :func:`study_facts` reads (the Tune trials'
    result files included): a cached study is stale when this changes."""
    run = RunDir(run_dir)
    exp = run.tune_experiment
    paths = [exp, run.eval_labels("validation"), run.teacher_logits("validation"),
             run.provenance("teacher"), run.teacher / MODEL_CONFIG, run.provenance("student"),
             run.al, run.al_curve, run.bench_json, run.report, run.summary_csv,
             *(path for path, _ in known_plots(run).values())]
    if exp.is_dir():
        paths += sorted(exp.glob(TUNE_EXPERIMENT_STATE))
        for pattern in (f"*/{TUNE_RESULT}", f"*/{TUNE_ERROR}", f"*/{VAL_LOGITS}"):
            paths += sorted(exp.glob(pattern))
    out = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            out.append((str(path), None))
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


def _records(frame: Any) -> list[dict[str, Any]]:
    """A DataFrame as JSON records (NaN -> null, numpy scalars -> numbers)."""
    return json.loads(frame.to_json(orient="records")) if len(frame) else []


def _confirmation(conf: Any) -> dict[str, Any] | None:
    """The confirmation set's size and each strategy's validation and confirmation verdicts."""
    if conf is None:
        return None
    return {"examples": conf.examples, "left_out": conf.left_out, "clusters": conf.clusters, "unit": conf.unit,
            "strategies": _records(conf.strategies), "declared": _records(conf.declared)}


def _without_root(text: str, run: RunDir) -> str:
    """An error message naming the run by its own name, not by where it lies on this host."""
    return str(text).replace(str(run.root), run.root.name)


def _teacher(run: RunDir, measured: dict[str, Any] | None, labels: Any) -> dict[str, Any]:
    """The teacher's figures: from its validation logits where the study read them (accuracy,
    macro-F1, ECE, parameters), else from its card; its test accuracy; the majority-class
    baseline the ``retained gain`` column is measured from."""
    from raydistill.platform import metrics as M
    from raydistill.platform.report import majority_accuracy
    from raydistill.platform.export import model_layers
    from raydistill.platform.report.run_files import count_safetensors_params

    facts = model_facts(run, "teacher")
    measured = measured or {}
    params = measured.get(M.PARAMS)
    accuracy = _finite(measured.get(M.ACCURACY))
    return {
        "layers": model_layers(run.teacher),
        "parameters": params if params is not None else count_safetensors_params(run.teacher),
        "validation_accuracy": accuracy if accuracy is not None else facts["validation_accuracy"],
        M.MACRO_F1: _finite(measured.get(M.MACRO_F1)),
        M.ECE: _finite(measured.get(M.ECE)),
        M.TEST_ACCURACY: facts[M.TEST_ACCURACY],
        "majority_baseline": majority_accuracy(labels),
    }


def _winner(run: RunDir, cells: Any) -> dict[str, Any]:
    """The best-mean cell (the one the study exports) and the exported student's provenance."""
    from raydistill.platform.export import read_provenance
    from raydistill.platform.report import choose_winner

    card = read_provenance(run.student)
    best = None
    if len(cells):
        strategy, temperature = choose_winner(cells)
        best = {"strategy": strategy, "temperature": temperature}
    exported = None if card is None else card.cell
    matches = None if best is None or exported is None else exported == (best["strategy"], best["temperature"])
    return {"best_cell": best, "provenance": None if card is None else card.model_dump(mode="json"),
            "exported_is_best_cell": matches}


def _active_learning(run: RunDir) -> dict[str, Any] | None:
    """The teacher's AL curve and each budget against random, or None before the teacher stage."""
    from raydistill.platform.errors import CheckpointError
    from raydistill.platform.report import al_comparison, read_al_curve

    if not run.al_curve.is_file():
        return None
    try:
        return {"curve": _records(read_al_curve(run.al_curve)), "vs_random": _records(al_comparison(run.root))}
    except (CheckpointError, OSError, ValueError) as err:  # a side result: say so, keep the page
        return {"curve": [], "vs_random": [], "error": _without_root(err, run)}


def _serving(run: RunDir) -> dict[str, Any] | None:
    """The serving benchmark's ratios (``bench.json``), or None before ``raydistill bench``."""
    if not run.bench_json.is_file():
        return None
    bench = _read_json(run.bench_json)
    if not isinstance(bench.get("summary"), dict):
        return {"error": "bench.json could not be read"}
    ratio_keys = ("texts_per_request", "concurrency", "student_vs_teacher", "student_int8_vs_teacher",
                  "student_batched_vs_per_request", "teacher_batched_vs_per_request")
    machine = bench.get("machine") if isinstance(bench.get("machine"), dict) else {}
    return {
        "created": bench.get("created"),
        "machine": {k: machine.get(k) for k in ("cpu", "cpu_cores", "device", "gpu")},
        "headline": [str(line) for line in bench.get("headline") or []],
        "summary": bench["summary"],
        "in_process": [{"batch_size": row.get("batch_size"), "student_vs_teacher": row.get("student_vs_teacher"),
                        "student_int8_vs_teacher": row.get("student_int8_vs_teacher")}
                       for row in bench.get("in_process") or [] if isinstance(row, dict)],
        "http": [{k: row.get(k) for k in ratio_keys}
                 for row in bench.get("http") or [] if isinstance(row, dict)],
    }


def empty_study(run: str | None, message: str) -> dict[str, Any]:
    """What ``GET /v1/results`` says when there is no study to show, and why."""
    return {"run": run, "available": False, "message": message, "trials": None, "cells": [],
            "verdict": None, "policy": None, "margin": None, "strategies": [], "strategy_verdict": None,
            "confirmation": None,
            "teacher": None, "winner": None, "active_learning": None,
            "serving": None, "plots": []}


def study_facts(run_dir: str | Path) -> dict[str, Any]:
    """The study of a run directory, as JSON: what ``GET /v1/results`` returns.

    Built from the report's own helpers (:func:`~raydistill.platform.report.study_summary`,
    ``verdict_sentence``, ``al_comparison``: what ``raydistill.results()`` and ``report.md``
    use, so the numbers and the verdicts are the same), plus the teacher's figures, the exported
    student's provenance and the serving benchmark's ratios. No Ray, no model. A stage that has
    not run leaves its part empty; without a sweep (or with sweep files that disagree with the
    labels) ``available`` is false and ``message`` says why. Raises only on a file it cannot
    parse at all (a corrupt ``.npy``).
    """
    from raydistill.platform.errors import CheckpointError
    from raydistill.platform.report import COMPLETED, DUPLICATE, ERRORED, STOPPED_EARLY, analyse
    from raydistill.platform.report.render import policy_note, strategy_sentence, verdict_sentence
    from raydistill.platform.report.run_files import optional_array
    from raydistill.platform.report.trials import find_experiment

    run = RunDir(run_dir)
    labels = optional_array(run.eval_labels("validation"))
    out = empty_study(run.root.name, NO_STUDY)
    cells: Any = []
    measured = None
    try:
        find_experiment(run.root)
    except CheckpointError:
        pass  # no sweep yet: NO_STUDY
    else:
        try:
            study = analyse(run.root)
            trials, cells, measured = study.trials, study.cells, study.teacher
        except CheckpointError as err:  # e.g. logits from another run: say which files disagree
            out["message"] = f"the study's files could not be read: {_without_root(err, run)}"
        else:
            counts = trials["status"].value_counts()
            out.update(available=True, message=None, cells=_records(cells), verdict=verdict_sentence(cells),
                       policy=policy_note(cells) if len(cells) else None, margin=study.margin,
                       strategies=_records(study.layer.strategies) if study.layer else [],
                       strategy_verdict=strategy_sentence(study.layer.strategies) if study.layer else None,
                       confirmation=_confirmation(study.confirmation))
            out["trials"] = {"total": len(trials), "completed": int(counts.get(COMPLETED, 0)),
                             "error": int(counts.get(ERRORED, 0)),
                             "stopped_early": int(counts.get(STOPPED_EARLY, 0)),
                             "duplicate": int(counts.get(DUPLICATE, 0))}
    out["teacher"] = _teacher(run, measured, labels)
    out["winner"] = _winner(run, cells)
    out["active_learning"] = _active_learning(run)
    out["serving"] = _serving(run)
    plots = {name: title for name, (path, title) in known_plots(run).items() if path.is_file()}
    if PLOT_ACTIVE_LEARNING in plots:  # the report's AL figure: the teacher stage's plus a band
        plots.pop(PLOT_AL_TEACHER, None)
    out["plots"] = [{"name": name, "title": title, "url": f"results/plots/{name}"}
                    for name, title in plots.items()]
    return json_safe(out)
