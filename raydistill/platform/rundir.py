"""The run directory: every path a stage writes or reads, in one place.

``runs/<name>-<timestamp>/`` is always handled as an absolute path (Tune changes a trial's
working directory). Later commands (report, serve, bench) take the run directory only.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from raydistill.platform.errors import CheckpointError

TUNE_EXPERIMENT = "students"


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory (absolute)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser().resolve())

    @classmethod
    def create(cls, runs_dir: str | Path, name: str) -> "RunDir":
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run = cls(Path(runs_dir) / f"{name}-{stamp}")
        run.root.mkdir(parents=True, exist_ok=False)
        return run

    def point_latest(self, name: str) -> Path:
        """``<runs_dir>/<name>-latest`` -> this run (a relative link, replaced atomically): a
        stable path for what serves the newest finished study (deploy/rayservice.yaml)."""
        link = self.root.parent / f"{name}-latest"
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.root.name, target_is_directory=True)
        os.replace(tmp, link)
        return link

    @classmethod
    def existing(cls, path: str | Path) -> "RunDir":
        run = cls(Path(path))
        if not run.config.is_file():
            raise CheckpointError(f"{run.root} is not a run directory (no config.yaml)")
        return run

    config = property(lambda self: self.root / "config.yaml")
    meta = property(lambda self: self.root / "meta.json")
    stages = property(lambda self: self.root / "stages.json")
    train = property(lambda self: self.root / "train")
    teacher = property(lambda self: self.root / "teacher")
    tokenizer = property(lambda self: self.root / "tokenizer")
    al = property(lambda self: self.root / "al")
    al_curve = property(lambda self: self.root / "al" / "curve.csv")
    cache = property(lambda self: self.root / "cache")
    tune = property(lambda self: self.root / "tune")
    tune_experiment = property(lambda self: self.root / "tune" / TUNE_EXPERIMENT)
    student = property(lambda self: self.root / "student")
    report = property(lambda self: self.root / "report.md")
    results_csv = property(lambda self: self.root / "results.csv")
    summary_csv = property(lambda self: self.root / "summary.csv")
    strategies_csv = property(lambda self: self.root / "strategies.csv")
    confirmation_csv = property(lambda self: self.root / "confirmation.csv")
    study_json = property(lambda self: self.root / "study.json")  # the report's sentences and settings
    plots = property(lambda self: self.root / "plots")
    bench_json = property(lambda self: self.root / "bench.json")
    bench_md = property(lambda self: self.root / "bench.md")
    # Labels of the evaluation splits and the teacher's logits on them, written by the teacher
    # stage so the report can compute fidelity and test metrics without running a model.
    labels = property(lambda self: self.root / "labels")

    def eval_labels(self, split: str) -> Path:
        return self.labels / f"{split}.npy"

    def eval_groups(self, split: str) -> Path:
        """Each example's cluster id (films for the embedded data); absent: rows are the unit."""
        return self.labels / f"{split}_groups.npy"

    clusters = property(lambda self: self.root / "labels" / "clusters.json")  # what a cluster is
    # Test examples no choice has seen (a boolean mask): the confirmation set.
    confirmation_mask = property(lambda self: self.root / "labels" / "test_unseen.npy")

    def teacher_logits(self, split: str) -> Path:
        return self.teacher / f"{split}_logits.npy"

    def student_logits(self, split: str) -> Path:
        return self.student / f"{split}_logits.npy"


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file through a temp file + rename: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float as None and tuples as lists: strict JSON has no NaN,
    and the files a run reads back may hold one."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def save_array(path: Path, array: np.ndarray) -> None:
    """Save a numpy array atomically (``.npy``, never pickled)."""
    _replace_atomically(path, ".npy", lambda tmp: np.save(tmp, np.asarray(array), allow_pickle=False))


def save_array_dir(path: Path, **arrays: np.ndarray) -> None:
    """Save named arrays as ``path/<name>.npy`` (memory-mappable, unlike one ``.npz``), written
    into a temp directory and renamed to ``path``: readers see every file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", np.asarray(array), allow_pickle=False)
        if path.is_dir():  # written meanwhile by another process, from the same inputs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_atomically(path: Path, suffix: str, write: Callable[[str], object]) -> None:
    """``write(tmp)`` into a temp file beside ``path`` (``suffix`` kept, as numpy wants), then
    rename it over ``path``: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise CheckpointError(f"missing file {path}")
    return np.load(path, allow_pickle=False)
