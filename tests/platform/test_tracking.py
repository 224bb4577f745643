"""Tracking (no Ray): the teacher's rounds as TensorBoard scalars and MLflow runs, read back with
each tool's own format (TensorBoard's event records, MLflow's client on a real file store)."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest

from raydistill.platform.config import config_from_dict, dump_config, load_config
from raydistill.platform.errors import ConfigError
from raydistill.platform.rundir import RunDir
from raydistill.platform.tracking import INSTALL_HINT, TeacherTracker, mlflow_target, teacher_tensorboard_dir

pytestmark = pytest.mark.unit

CURVE = [
    {"round": 0, "labeled_count": 1000, "train_loss": 0.69, "val_loss": 0.68, "val_accuracy": 0.55, "acquire_s": 0.1},
    {"round": 1, "labeled_count": 1250, "train_loss": 0.60, "val_loss": 0.66, "val_accuracy": 0.61, "acquire_s": 2.0},
    {"round": 2, "labeled_count": 1500, "train_loss": 0.52, "val_loss": 0.64, "val_accuracy": 0.64, "acquire_s": 2.5},
]


def _cfg(**tracking):
    return config_from_dict({"name": "study", "tracking": tracking})


def test_tracking_defaults_and_round_trip(tmp_path) -> None:
    cfg = _cfg()
    assert cfg.tracking.tensorboard and cfg.tracking.mlflow_uri is None and cfg.tracking.mlflow_experiment is None
    cfg = _cfg(mlflow_uri="local", mlflow_experiment="distil", tensorboard=False)
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "c.yaml") == cfg
    with pytest.raises(ConfigError, match="tracking.mlflow_uri"):
        _cfg(mlflow_uri="")
    with pytest.raises(ConfigError, match="tracking.tensorbord"):
        _cfg(tensorbord=True)


def test_tracking_may_change_on_a_run_whose_stages_are_built(tmp_path) -> None:
    """Tracking changes what is recorded, not what is computed: --resume --set may turn it on."""
    from raydistill.pipeline import open_run

    run = RunDir(tmp_path / "study-20261201-000000")
    run.root.mkdir(parents=True)
    run.config.write_text(dump_config(_cfg()))
    run.legacy_stages.write_text(json.dumps({"teacher": {"finished": "2026-12-01T00:00:00", "labeled": [1, 2]}}))
    run.tune_experiment.mkdir(parents=True)  # the sweep started too
    _, cfg = open_run(run.root, ["tracking.mlflow_uri=local", "tracking.tensorboard=false"])
    assert cfg.tracking.mlflow_uri == "local" and not cfg.tracking.tensorboard
    assert load_config(run.config) == cfg


def test_local_means_a_file_store_inside_the_run(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    assert mlflow_target(_cfg(), tmp_path) is None
    uri, experiment = mlflow_target(_cfg(mlflow_uri="local"), tmp_path / "study-1")
    assert uri == (tmp_path / "study-1" / "mlruns").resolve().as_uri() and experiment == "study-1"
    import os

    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"  # MLflow 3 refuses a file store without it
    assert mlflow_target(_cfg(mlflow_uri="http://mlflow:5000", mlflow_experiment="e"), tmp_path) == (
        "http://mlflow:5000", "e")


def test_mlflow_asked_for_but_missing_is_a_config_error_naming_the_extra(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(ConfigError) as err:
        TeacherTracker(_cfg(mlflow_uri="local"), tmp_path)
    assert INSTALL_HINT in str(err.value) and "tracking.mlflow_uri" in str(err.value)
    TeacherTracker(_cfg(), tmp_path)  # off: mlflow is never imported


def test_teacher_rounds_become_tensorboard_scalars_once_each(read_scalars, tmp_path) -> None:
    tracker = TeacherTracker(_cfg(), tmp_path)
    with tracker.arm("entropy"):
        tracker.log_round("entropy", CURVE[0])
        tracker.log_round("entropy", CURVE[0])  # the progress poll and the final catch-up both see it
        tracker.log_curve("entropy", CURVE)
    scalars = read_scalars(teacher_tensorboard_dir(tmp_path, "entropy"))
    assert scalars["teacher/val_accuracy"] == [(1000, pytest.approx(0.55)), (1250, pytest.approx(0.61)),
                                               (1500, pytest.approx(0.64))]
    assert [v for _, v in scalars["teacher/val_loss"]] == pytest.approx([0.68, 0.66, 0.64])
    assert [v for _, v in scalars["teacher/train_loss"]] == pytest.approx([0.69, 0.60, 0.52])
    assert [v for _, v in scalars["teacher/labeled_count"]] == [1000, 1250, 1500]
    assert [v for _, v in scalars["teacher/round"]] == [0, 1, 2]

    # The stage run again (--resume after a crash): the arm's events are replaced, not doubled.
    with tracker.arm("entropy"):
        tracker.log_curve("entropy", CURVE[:1])
    assert read_scalars(teacher_tensorboard_dir(tmp_path, "entropy"))["teacher/val_accuracy"] == [
        (1000, pytest.approx(0.55))]


def test_tensorboard_off_writes_no_events(tmp_path) -> None:
    tracker = TeacherTracker(_cfg(tensorboard=False), tmp_path)
    with tracker.arm("entropy"):
        tracker.log_curve("entropy", CURVE)
    assert not (tmp_path / "tensorboard").exists()


def test_teacher_arms_become_mlflow_runs_in_a_real_file_store(tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    root = tmp_path / "study-20261201-000000"
    cfg = config_from_dict({"name": "study", "teacher": {"lr": 3e-4}, "tracking": {"mlflow_uri": "local"}})
    tracker = TeacherTracker(cfg, root)
    with tracker.arm("entropy"):
        tracker.log_curve("entropy", CURVE)
    with pytest.raises(RuntimeError), tracker.arm("random"):
        tracker.log_round("random", CURVE[0])
        raise RuntimeError("the arm failed")

    client = MlflowClient((root / "mlruns").as_uri())
    experiment = client.get_experiment_by_name(root.name)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"teacher-entropy", "teacher-random"}
    entropy, random_arm = runs["teacher-entropy"], runs["teacher-random"]
    assert entropy.info.status == "FINISHED" and random_arm.info.status == "FAILED"
    assert entropy.data.params["teacher.lr"] == "0.0003" and entropy.data.params["al.rounds"] == "3"
    assert entropy.data.params["al.acquisition"] == "entropy" and random_arm.data.params["al.acquisition"] == "random"
    assert entropy.data.tags["raydistill.stage"] == "teacher" and entropy.data.tags["raydistill.arm"] == "entropy"
    history = client.get_metric_history(entropy.info.run_id, "val_accuracy")
    assert [(m.step, m.value) for m in history] == [(1000, 0.55), (1250, 0.61), (1500, 0.64)]
    assert [m.value for m in client.get_metric_history(entropy.info.run_id, "train_loss")] == [0.69, 0.60, 0.52]
    assert [m.step for m in client.get_metric_history(random_arm.info.run_id, "val_accuracy")] == [1000]

    # The arm trained again replaces its earlier run: one live run per arm.
    again = TeacherTracker(cfg, root)
    with again.arm("entropy"):
        again.log_curve("entropy", CURVE[:2])
    live = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name == "teacher-entropy"]
    assert len(live) == 1 and live[0].info.run_id != entropy.info.run_id
    assert len(client.get_metric_history(live[0].info.run_id, "val_accuracy")) == 2


def test_a_failing_tracking_server_costs_a_warning_not_the_arm(read_scalars, tmp_path, caplog, monkeypatch) -> None:
    from raydistill.platform.logs import log

    monkeypatch.setattr(log, "handlers", [*log.handlers, caplog.handler])  # raydistill may not propagate
    tracker = TeacherTracker(_cfg(mlflow_uri="local"), tmp_path / "study-1")
    with tracker.arm("entropy"):
        tracker._client = SimpleNamespace(log_batch=_boom, set_terminated=_boom)  # the server went away
        tracker.log_curve("entropy", CURVE)
    assert "[tracking] MLflow failed (OSError: server gone)" in caplog.text
    assert len(read_scalars(teacher_tensorboard_dir(tmp_path / "study-1", "entropy"))["teacher/val_accuracy"]) == 3


def _boom(*args, **kwargs):
    raise OSError("server gone")
