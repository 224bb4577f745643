"""The exported models (``teacher/``, ``student/``) and their typed card, ``provenance.json``.

Both exports go through :func:`export_model`: the checkpoint's files, the tokenizer, the model's
logits on the evaluation splits and the card are written into a directory beside the target,
which then replaces it whole, so a crash never leaves half an export. The report, the results
API and Serve read the card through :func:`read_provenance` and nothing else.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from raydistill.platform import metrics as M
from raydistill.platform.rundir import (
    LEGACY_EVAL, MODEL_CONFIG, PROVENANCE, atomic_write_json, save_array, split_logits_file, write_dir_atomically,
)


class Provenance(BaseModel):
    """What a model is and how good it is: written by both exports, read by every consumer.

    ``validation`` and ``test`` are :func:`raydistill.platform.metrics.evaluate` of the model's
    logits (fidelity against the teacher's, for the student). The ``cell_*`` figures are the
    student's cell over its seeds (the exported seed is one of them)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["teacher", "student"]
    num_layers: int
    teacher_num_layers: int
    strategy: str | None = None
    teacher_layers: list[int] | None = None
    temperature: float | None = None
    alpha: float | None = None
    lr: float | None = None
    seed: int | None = None
    seeds: list[int] = []
    exported: str = ""
    teacher_sha256: str | None = None
    validation: dict[str, float] = {}
    test: dict[str, float] = {}
    cell_validation_accuracy: float | None = None
    cell_test_accuracy: float | None = None
    cell_test_accuracy_std: float | None = None

    @property
    def cell(self) -> tuple[str, float] | None:
        """The (strategy, temperature) the model was distilled with; None for the teacher."""
        return None if self.strategy is None or self.temperature is None else (self.strategy, float(self.temperature))


def export_model(source: Path, target: Path, tokenizer: Any, provenance: Provenance,
                 logits: dict[str, np.ndarray]) -> None:
    """``target`` := the model files of ``source`` + ``tokenizer`` + each split's logits + the
    card, replaced whole (:func:`~raydistill.platform.rundir.write_dir_atomically`)."""
    def write(tmp: Path) -> None:
        for path in Path(source).iterdir():
            if path.is_file():
                shutil.copy2(path, tmp / path.name)
        tokenizer.save_pretrained(str(tmp))
        for split, array in logits.items():
            save_array(split_logits_file(tmp, split), np.asarray(array, dtype=np.float32))
        write_provenance(tmp, provenance)

    write_dir_atomically(Path(target), write)


def write_provenance(model_dir: Path, provenance: Provenance) -> None:
    atomic_write_json(Path(model_dir) / PROVENANCE, provenance.model_dump(mode="json"))


def read_provenance(model_dir: Path) -> Provenance | None:
    """The model's card, or None when it is missing or unreadable (a page or an API answer
    then says "unknown" rather than failing). Runs made before the card was typed are read too:
    a student's old ``provenance.json`` (its figures under ``metrics``) and a teacher's
    ``eval.json``."""
    model_dir = Path(model_dir)
    raw = _read_json(model_dir / PROVENANCE)
    if raw is not None and "role" not in raw:
        raw = _from_old_student(raw)
    elif raw is None and (old := _read_json(model_dir / LEGACY_EVAL)) is not None:
        raw = _from_old_teacher(model_dir, old)
    if raw is None:
        return None
    try:
        return Provenance.model_validate(raw)
    except ValidationError:
        return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _from_old_student(old: dict[str, Any]) -> dict[str, Any]:
    m = old.get("metrics") if isinstance(old.get("metrics"), dict) else {}
    return {**old, "role": "student", "num_layers": old.get("student_num_layers"),
            "validation": {M.ACCURACY: m[M.VAL_ACCURACY]} if M.VAL_ACCURACY in m else {},
            "test": {M.ACCURACY: m[M.TEST_ACCURACY]} if M.TEST_ACCURACY in m else {},
            "cell_validation_accuracy": m.get("val_accuracy_mean"), "cell_test_accuracy": m.get("test_accuracy_mean"),
            "cell_test_accuracy_std": m.get("test_accuracy_std")}


def model_config(model_dir: Path) -> dict[str, Any]:
    """A saved model's Hugging Face config (``{}`` when unreadable): its shape without its weights."""
    return _read_json(Path(model_dir) / MODEL_CONFIG) or {}


def model_layers(model_dir: Path) -> int | None:
    """The number of transformer layers of a saved model, from its config alone."""
    layers = model_config(model_dir).get("num_hidden_layers")
    return layers if isinstance(layers, int) else None


def _from_old_teacher(model_dir: Path, old: dict[str, Any]) -> dict[str, Any]:
    layers = model_layers(model_dir)
    return {"role": "teacher", "num_layers": layers, "teacher_num_layers": layers, "exported": "the teacher",
            "validation": {M.ACCURACY: old["validation_accuracy"]} if "validation_accuracy" in old else {},
            "test": {M.ACCURACY: old[M.TEST_ACCURACY]} if M.TEST_ACCURACY in old else {}}
