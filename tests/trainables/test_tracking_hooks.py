"""Where tracking hooks into the stages (no Ray cluster): the teacher's round poll feeds the
tracker live, and the sweep's Tune callbacks follow ``tracking``."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from raydistill.platform.config import config_from_dict
from raydistill.platform.rundir import RunDir

pytestmark = pytest.mark.unit

CURVE = [{"round": r, "labeled_count": 1000 + 250 * r, "train_loss": 0.5, "val_loss": 0.6, "val_accuracy": 0.6}
         for r in range(3)]


def test_the_round_progress_hands_each_round_to_the_listener_once(monkeypatch) -> None:
    """_RoundProgress (the driver's poll of the ActiveLearner's curve) feeds tracking live."""
    from raydistill.trainables import teacher as teacher_module

    curve: list[dict] = []
    learner = SimpleNamespace(curve=SimpleNamespace(remote=lambda: list(curve)))
    monkeypatch.setattr(teacher_module, "ray", SimpleNamespace(get=lambda ref, timeout=None: ref))
    heard = []
    progress = teacher_module._RoundProgress(learner, "entropy", rounds=2, interval_s=60,
                                             on_round=lambda arm, point: heard.append((arm, point["round"])))
    curve.append(CURVE[0])
    progress._print_new()
    curve.append(CURVE[1])
    progress._print_new()
    progress._print_new()
    assert heard == [("entropy", 0), ("entropy", 1)]
    assert teacher_module._RoundProgress(learner, "random", rounds=2)._on_round is None  # no tracking asked


@pytest.mark.parametrize("tensorboard", [True, False])
def test_the_sweeps_callbacks_follow_the_tracking_config(tmp_path, tensorboard) -> None:
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
    from ray.tune.utils.callback import _create_default_callbacks

    from raydistill.trainables import sweep as student_module

    run = RunDir(tmp_path / "study-1")
    cfg = config_from_dict({"tracking": {"tensorboard": tensorboard}})
    callbacks = student_module._run_config(cfg, run, 4).callbacks
    assert not any(isinstance(c, MLflowLoggerCallback) for c in callbacks)
    full = _create_default_callbacks(list(callbacks))  # what Tune adds to them
    tbx = [c for c in full if isinstance(c, TBXLoggerCallback)]
    assert len(tbx) == 1 and isinstance(tbx[0], student_module._NoTensorBoard) is not tensorboard
    assert any(isinstance(c, CSVLoggerCallback) for c in full) and any(isinstance(c, JsonLoggerCallback) for c in full)

    cfg = config_from_dict({"name": "study", "tracking": {"mlflow_uri": "local", "mlflow_experiment": "distil"}})
    mlflow = [c for c in student_module._run_config(cfg, run, 4).callbacks if isinstance(c, MLflowLoggerCallback)]
    assert len(mlflow) == 1
    assert mlflow[0].tracking_uri == (run.root / "mlruns").as_uri() and mlflow[0].experiment_name == "distil"
    assert not mlflow[0].should_save_artifact and mlflow[0].tags["raydistill.stage"] == "sweep"
