"""The run directory: every path a stage writes or reads, in one place.

``runs/<name>-<timestamp>/`` is always handled as an absolute path (Tune changes a trial's
working directory). Later commands (report, serve, bench) take the run directory only.
"""

from __future__ import annotations

import hashlib
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
FRONTIER_EXPERIMENT = "frontier"  # `raydistill frontier`'s students of every depth

# Every file and directory name a stage writes or reads lives here; no other module spells one
# (tests/test_layout.py greps for them). Names Tune and Hugging Face choose are named here too,
# so a reader of the run's files has one place to look.

# The run directory
CONFIG = "config.yaml"
META = "meta.json"
MANIFEST = "manifest.json"  # the stage ledger: what each stage was built from and handed on
LEGACY_STAGES = "stages.json"  # older runs' ledger, migrated into the manifest on first read
RUN_LOG = "run.log"
SERVE_CONFIG = "serve_config.yaml"
REPORT = "report.md"
RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
STRATEGIES_CSV = "strategies.csv"
CONFIRMATION_CSV = "confirmation.csv"
STUDY_JSON = "study.json"
BENCH_JSON = "bench.json"
BENCH_MD = "bench.md"
FRONTIER_CSV = "frontier.csv"
FRONTIER_MD = "frontier.md"
LABEL_NAMES = "label_names.json"
CLUSTERS = "clusters.json"
CONFIRMATION_MASK = "test_unseen.npy"
AL_CURVE = "curve.csv"
AL_PLOT = "curve.png"
OPTUNA_BEST = "optuna_best.json"  # under tune/: alpha and lr per strategy, for `--resume`
TUNE_RESUME = "resume"  # under tune/: last checkpoints of unfinished trials, for `--resume`
# Figures under plots/ (also the names the service serves them by)
PLOT_VAL_ACCURACY = "val_accuracy.png"
PLOT_LEARNING_CURVES = "learning_curves.png"
PLOT_ACTIVE_LEARNING = "active_learning.png"
PLOT_FOREST = "forest.png"
PLOT_BENCH = "bench.png"
PLOT_FRONTIER = "frontier.png"
PLOT_AL_TEACHER = "al_curve.png"  # the URL name of al/curve.png

# A model directory (teacher/, student/, a checkpoint's model/): Hugging Face's files and ours
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = "model.safetensors"
MODEL_WEIGHTS_GLOB = "*.safetensors"  # a large model's weights may be sharded
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
PROVENANCE = "provenance.json"  # the model's typed card (raydistill.platform.export.Provenance)
MODEL_CARD = "README.md"  # the Hub-format card the report writes
LEGACY_EVAL = "eval.json"  # the teacher's figures in runs made before the typed card

# A checkpoint (Train's and Tune's) and a trial directory (Tune's files and ours)
CHECKPOINT_MODEL = "model"
CHECKPOINT_STATE = "state.json"
OPTIMIZER_STATE = "optimizer.pt"
RNG_STATE = "torch_rng.npy"
RANK_RNG_STATE = "torch_rng_rank{rank}.npy"
TUNE_PARAMS = "params.json"
TUNE_RESULT = "result.json"
TUNE_ERROR = "error.txt"
TUNE_EXPERIMENT_STATE = "experiment_state-*.json"
TUNE_CHECKPOINTS = "checkpoint_*"
FATAL = "fatal.json"  # a deterministic error, recorded so a retry raises it at once
VAL_LOGITS = "val_logits.npy"
TEST_LOGITS = "test_logits.npy"
ROUND0 = "round0"  # an active-learning arm's round-0 teacher, which every other arm starts from


def fatal_file(directory: str | Path) -> Path:
    return Path(directory) / FATAL


def split_logits_file(model_dir: str | Path, split: str) -> Path:
    """A model's logits on an evaluation split (teacher/ and student/ hold them)."""
    return Path(model_dir) / f"{split}_logits.npy"


def array_file(directory: str | Path, name: str) -> Path:
    """One array of a directory of arrays (a tokenised split in cache/)."""
    return Path(directory) / f"{name}.npy"


def has_model(directory: str | Path) -> bool:
    return (Path(directory) / MODEL_CONFIG).is_file()


def has_tokenizer(directory: str | Path) -> bool:
    return any((Path(directory) / name).is_file() for name in TOKENIZER_FILES)


@dataclass(frozen=True)
class CheckpointDir:
    """A Train or Tune checkpoint: the model plus the state that resumes its loop."""

    path: Path
    model = property(lambda self: Path(self.path) / CHECKPOINT_MODEL)
    state = property(lambda self: Path(self.path) / CHECKPOINT_STATE)
    optimizer = property(lambda self: Path(self.path) / OPTIMIZER_STATE)
    rng = property(lambda self: Path(self.path) / RNG_STATE)

    def rank_rng(self, rank: int) -> Path:
        return Path(self.path) / RANK_RNG_STATE.format(rank=rank)


@dataclass(frozen=True)
class TrialDir:
    """One Tune trial's directory: Tune's files and the logits the trial leaves for the report."""

    path: Path
    params = property(lambda self: Path(self.path) / TUNE_PARAMS)
    result = property(lambda self: Path(self.path) / TUNE_RESULT)
    error = property(lambda self: Path(self.path) / TUNE_ERROR)
    val_logits = property(lambda self: Path(self.path) / VAL_LOGITS)
    test_logits = property(lambda self: Path(self.path) / TEST_LOGITS)

    def checkpoints(self) -> list[Path]:
        """Its checkpoint directories, oldest first."""
        return sorted(Path(self.path).glob(TUNE_CHECKPOINTS))

    def last_model(self) -> Path:
        """The model directory of its newest checkpoint. Raises CheckpointError without one."""
        checkpoints = self.checkpoints()
        if not checkpoints:
            raise CheckpointError(f"trial {self.path} has no checkpoint")
        return CheckpointDir(checkpoints[-1]).model


@dataclass(frozen=True)
class ArmDir:
    """One active-learning arm (``al/<acquisition>``): the learner's state, each round's
    validation logits and the round-0 checkpoint."""

    path: Path
    state = property(lambda self: Path(self.path) / CHECKPOINT_STATE)
    round0 = property(lambda self: Path(self.path) / ROUND0)

    def round_logits(self, round_: int) -> Path:
        return Path(self.path) / f"val_logits_round{int(round_)}.npy"


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
            raise CheckpointError(f"{run.root} is not a run directory (no {CONFIG})")
        return run

    config = property(lambda self: self.root / CONFIG)
    meta = property(lambda self: self.root / META)
    manifest = property(lambda self: self.root / MANIFEST)
    legacy_stages = property(lambda self: self.root / LEGACY_STAGES)
    run_log = property(lambda self: self.root / RUN_LOG)
    serve_config = property(lambda self: self.root / SERVE_CONFIG)
    train = property(lambda self: self.root / "train")
    teacher = property(lambda self: self.root / "teacher")
    tokenizer = property(lambda self: self.root / "tokenizer")
    al = property(lambda self: self.root / "al")
    al_curve = property(lambda self: self.root / "al" / AL_CURVE)
    al_plot = property(lambda self: self.root / "al" / AL_PLOT)  # the teacher stage's; the report's adds a band
    cache = property(lambda self: self.root / "cache")
    tune = property(lambda self: self.root / "tune")
    tune_experiment = property(lambda self: self.root / "tune" / TUNE_EXPERIMENT)
    tune_resume = property(lambda self: self.resume_dir(TUNE_EXPERIMENT))
    frontier_csv = property(lambda self: self.root / FRONTIER_CSV)
    frontier_md = property(lambda self: self.root / FRONTIER_MD)

    def experiment(self, name: str) -> Path:
        """A Tune experiment of this run: the sweep's (``students``) or the frontier's."""
        return self.tune / name

    def resume_dir(self, experiment: str) -> Path:
        """Where an interrupted experiment's last checkpoints wait for ``--resume``."""
        return self.tune / (TUNE_RESUME if experiment == TUNE_EXPERIMENT else f"{TUNE_RESUME}-{experiment}")
    optuna_best = property(lambda self: self.root / "tune" / OPTUNA_BEST)
    student = property(lambda self: self.root / "student")
    tensorboard = property(lambda self: self.root / "tensorboard")
    report = property(lambda self: self.root / REPORT)
    results_csv = property(lambda self: self.root / RESULTS_CSV)
    summary_csv = property(lambda self: self.root / SUMMARY_CSV)
    strategies_csv = property(lambda self: self.root / STRATEGIES_CSV)
    confirmation_csv = property(lambda self: self.root / CONFIRMATION_CSV)
    study_json = property(lambda self: self.root / STUDY_JSON)  # the report's sentences and settings
    plots = property(lambda self: self.root / "plots")
    bench_json = property(lambda self: self.root / BENCH_JSON)
    bench_md = property(lambda self: self.root / BENCH_MD)
    # Labels of the evaluation splits and the teacher's logits on them, written by the teacher
    # stage so the report can compute fidelity and test metrics without running a model.
    labels = property(lambda self: self.root / "labels")
    label_names = property(lambda self: self.root / "labels" / LABEL_NAMES)

    def model(self, name: str) -> Path:
        """An exported model's directory: ``teacher`` or ``student``."""
        if name not in ("teacher", "student"):
            raise ValueError(f"no model {name!r} in a run (teacher or student)")
        return self.root / name

    def provenance(self, name: str) -> Path:
        return self.model(name) / PROVENANCE

    def model_card(self, name: str) -> Path:
        return self.model(name) / MODEL_CARD

    def plot(self, name: str) -> Path:
        return self.plots / name

    def arm(self, acquisition: str) -> ArmDir:
        return ArmDir(self.al / acquisition)

    def encoded_split(self, split: str, key: str) -> Path:
        """A tokenised split in the cache, keyed by what it was made from."""
        return self.cache / f"{split}-{key}"

    def eval_labels(self, split: str) -> Path:
        return self.labels / f"{split}.npy"

    def eval_groups(self, split: str) -> Path:
        """Each example's cluster id (films for the embedded data); absent: rows are the unit."""
        return self.labels / f"{split}_groups.npy"

    clusters = property(lambda self: self.root / "labels" / CLUSTERS)  # what a cluster is
    # Test examples no choice has seen (a boolean mask): the confirmation set.
    confirmation_mask = property(lambda self: self.root / "labels" / CONFIRMATION_MASK)

    def teacher_logits(self, split: str) -> Path:
        return split_logits_file(self.teacher, split)

    def student_logits(self, split: str) -> Path:
        return split_logits_file(self.student, split)


def write_atomically(path: Path, write: Callable[[str], object]) -> None:
    """``write(tmp)`` into a temp file beside ``path`` (same suffix, as numpy and matplotlib
    want), then rename it over ``path``: a crash never leaves half a file. Every file a run
    writes goes through here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


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
    write_atomically(path, lambda tmp: np.save(tmp, np.asarray(array), allow_pickle=False))


def save_array_dir(path: Path, **arrays: np.ndarray) -> None:
    """Save named arrays as ``path/<name>.npy`` (memory-mappable, unlike one ``.npz``), written
    into a temp directory and renamed to ``path``: readers see every file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        for name, array in arrays.items():
            np.save(array_file(tmp, name), np.asarray(array), allow_pickle=False)
        if path.is_dir():  # written meanwhile by another process, from the same inputs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_dir_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` fills a temp directory beside ``path``, which then replaces ``path`` whole
    (the old one moved aside, then deleted): a crash leaves the old directory or the new one,
    never half. Both model exports go through here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        write(tmp)
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_array(path: Path) -> np.ndarray:
    if not path.is_file():
        raise CheckpointError(f"missing file {path}")
    return np.load(path, allow_pickle=False)


def file_sha256(path: Path) -> str:
    """The content hash the manifest records (read in 1 MiB blocks: weights can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
