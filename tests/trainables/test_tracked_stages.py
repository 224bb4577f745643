"""Tracking through the real stages: the teacher's rounds reach TensorBoard from the driver while
Ray Train runs, and a Tune sweep with ``tracking.mlflow_uri`` makes one MLflow run per trial
through Ray's MLflowLoggerCallback, read back from a real file store with MLflow's own client."""

from __future__ import annotations

import csv
import json

import pytest

from raydistill.platform.tracking import teacher_tensorboard_dir

pytestmark = [pytest.mark.ray, pytest.mark.timeout(1200)]


def test_the_teacher_stage_writes_each_round_for_tensorboard(read_scalars, tiny_teacher_run) -> None:
    cfg, run, _, _ = tiny_teacher_run
    with run.al_curve.open(encoding="utf-8") as f:
        curve = [row for row in csv.DictReader(f) if row["acquisition"] == cfg.al.acquisition]
    assert len(curve) == cfg.al.rounds + 1
    scalars = read_scalars(teacher_tensorboard_dir(run.root, cfg.al.acquisition))
    assert scalars["teacher/val_accuracy"] == [
        (int(row["labeled_count"]), pytest.approx(float(row["val_accuracy"]), abs=1e-6)) for row in curve]
    assert [v for _, v in scalars["teacher/train_loss"]] == pytest.approx(
        [float(row["train_loss"]) for row in curve], abs=1e-6)


def test_a_sweep_with_mlflow_makes_one_run_per_trial_and_tensorboard_events(read_scalars, tiny_teacher_run, teacher_only_run) -> None:
    from mlflow.tracking import MlflowClient

    from raydistill.pipeline import open_run
    from raydistill.trainables.sweep import run_sweep

    _, _, data, info = tiny_teacher_run
    run, cfg = open_run(teacher_only_run, ["sweep.strategies=[bottom,top]", "sweep.temperatures=[2.0]",
                                           "sweep.seeds=[0]", "tracking.mlflow_uri=local"])
    assert run_sweep(cfg, run, data, info["labeled"]) == 2

    trials = {}
    for trial_dir in (d for d in run.tune_experiment.iterdir() if (d / "params.json").is_file()):
        strategy = json.loads((trial_dir / "params.json").read_text())["strategy"]
        results = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
        trials[strategy] = (trial_dir, results)
    assert set(trials) == {"bottom", "top"}

    client = MlflowClient((run.root / "mlruns").as_uri())
    experiment = client.get_experiment_by_name(run.root.name)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`raydistill.stage` = 'sweep'")
    assert sorted(r.data.params["strategy"] for r in runs) == ["bottom", "top"]
    for r in runs:
        trial_dir, results = trials[r.data.params["strategy"]]
        assert r.info.status == "FINISHED"
        assert float(r.data.params["temperature"]) == 2.0 and r.data.params["seed"] == "0"
        assert float(r.data.params["lr"]) == cfg.student.lr
        assert r.data.tags["raydistill.run"] == run.root.name
        history = client.get_metric_history(r.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2] == [row["training_iteration"] for row in results]
        assert [m.value for m in history] == pytest.approx([row["val_accuracy"] for row in results])
        # Tune's own TensorBoard events, one point per epoch, in the trial's directory.
        tb = read_scalars(trial_dir)["ray/tune/val_accuracy"]
        assert [v for _, v in tb] == pytest.approx([row["val_accuracy"] for row in results], abs=1e-6)
