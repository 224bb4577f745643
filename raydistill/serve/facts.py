"""Run facts shown by the service: what ``GET /v1/models`` says about a model besides its size.

Read from the run directory when the app is built, so a replica needs no access to the run's
bookkeeping files; missing or broken files give ``None``s, never an error.
"""

import csv
import json
import math
from pathlib import Path
from typing import Any

from raydistill.platform.rundir import RunDir


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


def _first(sources: list[dict[str, Any]], keys: tuple[str, ...]) -> float | None:
    for source in sources:
        for key in keys:
            if (x := _finite(source.get(key))) is not None:
                return x
    return None


def _summary_accuracy(run: RunDir, provenance: dict[str, Any]) -> float | None:
    """The student's cell (strategy, temperature) in ``summary.csv``: its mean val accuracy."""
    if not run.summary_csv.is_file() or "strategy" not in provenance:
        return None
    try:
        with run.summary_csv.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return None
    for row in rows:
        if row.get("strategy") != str(provenance["strategy"]):
            continue
        t = _finite(row.get("temperature"))
        if t is not None and _finite(provenance.get("temperature")) not in (None, t):
            continue
        for key in ("val_accuracy_mean", "val_accuracy", "mean_val_accuracy"):
            if (x := _finite(row.get(key))) is not None:
                return x
    return None


def model_facts(run: RunDir, name: str) -> dict[str, Any]:
    """What ``GET /v1/models`` says about a model besides its size: provenance and accuracy.

    Reads ``<model>/provenance.json`` (the student's, with ``metrics``), ``<model>/eval.json``
    (the teacher's) and, for the student's mean over seeds when provenance lacks it, its cell
    in ``<run>/summary.csv``. Missing files give ``None``s, never an error.
    """
    model_dir = run.root / name
    provenance = _read_json(model_dir / "provenance.json")
    evaluation = _read_json(model_dir / "eval.json")
    metrics = provenance.get("metrics") if isinstance(provenance.get("metrics"), dict) else {}
    sources = [evaluation, metrics, provenance]
    val = _first(sources, ("validation_accuracy", "val_accuracy"))
    cell_mean = _first(sources, ("val_accuracy_mean",))
    if cell_mean is None and name == "student":
        cell_mean = _summary_accuracy(run, provenance)
    return {
        "strategy": provenance.get("strategy"),
        "teacher_layers": provenance.get("teacher_layers"),
        "temperature": provenance.get("temperature"),
        "provenance": provenance or None,
        "validation_accuracy": val if val is not None else cell_mean,
        # The student's cell (strategy x temperature) averaged over seeds, when known.
        "validation_accuracy_mean_over_seeds": cell_mean,
        "test_accuracy": _first(sources, ("test_accuracy",)),
    }
