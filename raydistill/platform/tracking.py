"""Tracking in the tools users already read: TensorBoard event files and MLflow runs.

The student sweep is Tune's to track: each trial's TensorBoard events land in its trial
directory (``RUN/tune/students/<trial>/``) and, with ``tracking.mlflow_uri`` set, Ray's own
``MLflowLoggerCallback`` makes one MLflow run per trial (wired in ``trainables/student.py``).
The teacher's Ray Train workers write neither, and their reports are per rank; so the driver
writes the teacher's from the curve the ActiveLearner keeps: one point per active-learning
round under ``RUN/tensorboard/teacher/<acquisition>/`` and one MLflow run per acquisition arm.
One ``tensorboard --logdir RUN`` then shows teacher and students, and one MLflow experiment
holds both stages.

Tracking is a view of the run, not part of it: once an arm trains, a tracking server that
fails costs a warning, never the stage. What the run computes lives in its files
(``al/curve.csv``, ``tune/students``) either way.

No Ray here (``raydistill.platform`` never imports it); tensorboardX and mlflow are imported
only when used, so neither is needed where tracking is off.
"""

from __future__ import annotations

import importlib
import os
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

from raydistill.platform import metrics as M
from raydistill.platform.config import STAGE_INPUTS, ExperimentConfig, flat_config
from raydistill.platform.errors import ConfigError
from raydistill.platform.logs import log

TENSORBOARD_DIR = "tensorboard"  # RUN/tensorboard/teacher/<acquisition>/
MLFLOW_DIR = "mlruns"  # RUN/mlruns: where ``mlflow_uri: local`` keeps its file store
LOCAL = "local"
INSTALL_HINT = 'pip install "raydistill[tracking]"'
# MLflow 3.x refuses a file store unless this is set ("maintenance mode"); a file store is
# what works offline with nothing to run, so raydistill opts in when one is asked for.
ALLOW_FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
# Tags on every MLflow run raydistill makes, so a rerun finds (and replaces) its own.
RUN_TAG, STAGE_TAG, ARM_TAG = "raydistill.run", "raydistill.stage", "raydistill.arm"
# The config sections the teacher is computed from: its MLflow run's params.
TEACHER_PARAM_SECTIONS = STAGE_INPUTS["teacher"]
_MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
_MAX_BATCH = 100  # MLflow's limit on params per log_batch


def teacher_tensorboard_dir(run_root: Path, acquisition: str) -> Path:
    return Path(run_root) / TENSORBOARD_DIR / "teacher" / acquisition


def mlflow_target(cfg: ExperimentConfig, run_root: Path) -> tuple[str, str] | None:
    """``(tracking URI, experiment name)``, or None when MLflow tracking is off.

    Raises ConfigError, with the install command, when it is on and mlflow is not installed:
    called before a stage trains, so a missing package costs seconds, not a trained teacher."""
    uri = cfg.tracking.mlflow_uri
    if uri is None:
        return None
    try:
        importlib.import_module("mlflow")
    except ImportError:
        raise ConfigError(f"tracking.mlflow_uri is set ({uri!r}) but mlflow is not installed: "
                          f"{INSTALL_HINT}") from None
    if uri == LOCAL:
        uri = (Path(run_root).resolve() / MLFLOW_DIR).as_uri()
    if urlparse(uri).scheme in ("", "file"):
        os.environ.setdefault(ALLOW_FILE_STORE_ENV, "true")
    return uri, cfg.tracking.mlflow_experiment or Path(run_root).name


def experiment_id(client, name: str) -> str:
    """The experiment's id, created (or restored from MLflow's trash) when needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def flat_params(cfg: ExperimentConfig, sections: tuple[str, ...]) -> dict[str, str]:
    """The config values of ``sections`` as flat ``section.key`` strings (MLflow params)."""
    return {key: str(value)[:_MAX_PARAM_CHARS] for key, value in flat_config(cfg).items()
            if key.split(".")[0] in sections}


class _Arm:
    """One acquisition arm's open TensorBoard writer and MLflow run, and the rounds logged."""

    def __init__(self, writer, run_id: str | None) -> None:
        self.writer, self.run_id, self.rounds = writer, run_id, set()


class TeacherTracker:
    """The teacher stage's TensorBoard event files and MLflow runs, one per acquisition arm.

    ``log_round`` takes a curve point (round, labelled count, losses, accuracy, timings) as the
    driver sees it; the step is the labelled count, so both arms line up on the active-learning
    curve's x axis. Each arm starts afresh: a stage that is run again (``--resume`` after a
    crash) replaces the arm's event files and MLflow run instead of doubling their points."""

    def __init__(self, cfg: ExperimentConfig, run_root: Path) -> None:
        self._cfg, self._root = cfg, Path(run_root)
        self._lock = threading.Lock()  # rounds arrive from the progress thread and the driver
        self._arms: dict[str, _Arm] = {}
        self._client = self._experiment = None
        target = mlflow_target(cfg, self._root)
        if target is not None:
            from mlflow.tracking import MlflowClient

            uri, name = target
            self._client = MlflowClient(tracking_uri=uri)
            self._experiment = experiment_id(self._client, name)  # a bad URI fails here, before training
            log.info(f"[tracking] MLflow: experiment {name!r} at {uri}")

    @contextmanager
    def arm(self, acquisition: str) -> Iterator[None]:
        """Open the arm's writer and run; close them as FINISHED, or FAILED on an exception."""
        self._start(acquisition)
        failed = True
        try:
            yield
            failed = False
        finally:
            self._end(acquisition, failed)

    def log_round(self, acquisition: str, point: dict[str, Any]) -> None:
        """Record one finished round (once: a round seen again is skipped)."""
        with self._lock:
            arm = self._arms.get(acquisition)
            if arm is None or point[M.ROUND] in arm.rounds:
                return
            arm.rounds.add(point[M.ROUND])
            values = {k: float(v) for k, v in point.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
            step = int(point[M.LABELED_COUNT])
            if arm.writer is not None:
                self._quietly("TensorBoard", lambda: self._write_scalars(arm.writer, values, step))
            if arm.run_id is not None:
                self._quietly("MLflow", lambda: self._log_metrics(arm.run_id, values, step))

    def log_curve(self, acquisition: str, curve: list[dict[str, Any]]) -> None:
        """Every round of a finished arm's curve that ``log_round`` has not seen yet."""
        for point in curve:
            self.log_round(acquisition, point)

    def _start(self, acquisition: str) -> None:
        writer = run_id = None
        if self._cfg.tracking.tensorboard:
            from tensorboardX import SummaryWriter

            directory = teacher_tensorboard_dir(self._root, acquisition)
            shutil.rmtree(directory, ignore_errors=True)  # a rerun replaces the arm's events
            writer = SummaryWriter(logdir=str(directory))
        if self._client is not None:
            run_id = self._quietly("MLflow", lambda: self._start_run(acquisition))
        with self._lock:
            self._arms[acquisition] = _Arm(writer, run_id)

    def _end(self, acquisition: str, failed: bool) -> None:
        with self._lock:
            arm = self._arms.pop(acquisition, None)
        if arm is None:
            return
        if arm.writer is not None:
            arm.writer.close()
        if arm.run_id is not None:
            status = "FAILED" if failed else "FINISHED"
            self._quietly("MLflow", lambda: self._client.set_terminated(arm.run_id, status=status))

    def _start_run(self, acquisition: str) -> str:
        from mlflow.entities import Param

        client, run_name = self._client, self._root.name
        for old in client.search_runs(
                [self._experiment], filter_string=f"tags.`{RUN_TAG}` = '{run_name}' and "
                f"tags.`{STAGE_TAG}` = 'teacher' and tags.`{ARM_TAG}` = '{acquisition}'"):
            client.delete_run(old.info.run_id)  # an earlier attempt of this arm, superseded
        run = client.create_run(self._experiment, run_name=f"teacher-{acquisition}", tags={
            RUN_TAG: run_name, STAGE_TAG: "teacher", ARM_TAG: acquisition, "raydistill.run_dir": str(self._root)})
        params = {**flat_params(self._cfg, TEACHER_PARAM_SECTIONS), M.ACQUISITION: acquisition}
        params["al.acquisition"] = acquisition  # the random baseline arm is not the config's acquisition
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), _MAX_BATCH):
            client.log_batch(run.info.run_id, params=items[i:i + _MAX_BATCH])
        return run.info.run_id

    @staticmethod
    def _write_scalars(writer, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            writer.add_scalar(f"teacher/{key}", value, global_step=step)
        writer.flush()  # live: TensorBoard shows the round now, not at the writer's next flush

    def _log_metrics(self, run_id: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    @staticmethod
    def _quietly(what: str, call):
        """Run ``call``; on an error, warn and go on (tracking never fails a trained arm)."""
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - any tracking failure is a warning
            log.warning(f"[tracking] {what} failed ({type(err).__name__}: {str(err)[:200]}); training goes on")
            return None
