"""The student sweep on Ray Tune: grid completeness, layer provenance, distinct students, the
report, the winner, the teacher-logit cache, and resuming an interrupted sweep."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from raydistill.platform.layers import teacher_layer_indices
from raydistill.platform.report import load_results, summarize
from raydistill.platform.rundir import VAL_LOGITS

pytestmark = [pytest.mark.ray, pytest.mark.timeout(1200)]


def test_grid_completes_with_correct_layers_and_distinct_students(tiny_study_run):
    cfg, run, _, summary = tiny_study_run
    df = load_results(run.root)
    assert len(df) == 16
    assert set(df["status"]) == {"TERMINATED"}
    for _, row in df.iterrows():
        expected = teacher_layer_indices(row["strategy"], cfg.teacher.num_layers, cfg.student.num_layers)
        assert row["layers"] == ",".join(map(str, expected)), row["strategy"]
    # The seed study's bug: every student was the same object. Here each strategy differs.
    for (temperature, seed), group in df.groupby(["temperature", "seed"]):
        assert group["val_loss"].round(6).nunique() == len(cfg.sweep.strategies), (temperature, seed)
    cells = summarize(df)
    assert len(cells) == 8 and set(cells["n"]) == {2}
    # Two epochs, two checkpoints reported; sweep.checkpoints_to_keep (1) of them stay on disk.
    for trial_dir in df["trial_dir"]:
        assert len(list(Path(trial_dir).glob("checkpoint_*"))) == cfg.sweep.checkpoints_to_keep == 1


def test_report_and_winner_files(tiny_study_run):
    cfg, run, data, summary = tiny_study_run
    report = run.report.read_text()
    assert "Holm" in report and "test" in report.lower()
    for strategy in cfg.sweep.strategies:
        assert strategy in report
    for name in ("val_accuracy.png", "learning_curves.png", "active_learning.png"):
        assert (run.plots / name).stat().st_size > 1000
    assert run.results_csv.is_file() and run.summary_csv.is_file()
    provenance = json.loads((run.student / "provenance.json").read_text())
    cells = summarize(load_results(run.root))
    best = cells.iloc[cells["val_accuracy_mean"].values.argmax()]
    assert (provenance["strategy"], provenance["temperature"]) == (best["strategy"], best["temperature"])
    assert provenance["teacher_layers"] == teacher_layer_indices(
        provenance["strategy"], cfg.teacher.num_layers, cfg.student.num_layers)
    test_logits = np.load(run.student_logits("test"))
    assert test_logits.shape == (len(data.dataset.test), 2)
    # Every seed of the winning cell was scored on test (the report's mean ± std).
    cell = load_results(run.root).query("strategy == @best.strategy and temperature == @best.temperature")
    assert all((Path(d) / "test_logits.npy").is_file() for d in cell["trial_dir"])
    assert provenance["seeds"] == sorted(cfg.sweep.seeds) and provenance["seed"] in cfg.sweep.seeds


def test_exported_models_answer_hf_pipeline_with_label_names(tiny_study_run):
    """HF's own pipeline on the exported teacher and student says the dataset's label names."""
    from transformers import pipeline

    _, run, data, _ = tiny_study_run
    for model_dir in (run.teacher, run.student):
        classify = pipeline("text-classification", model=str(model_dir), device="cpu")
        answers = classify(["a gorgeous, moving film", "dull and lifeless"])
        assert {a["label"] for a in answers} <= set(data.dataset.label_names), answers


class _FakeTune:
    """Stands in for ``ray.tune`` so a trial runs in this process, where forward calls can be counted."""

    Checkpoint = type("Checkpoint", (), {"from_directory": staticmethod(lambda d: d)})

    def __init__(self, trial_dir: Path) -> None:
        self.reports: list[dict] = []
        self._trial_dir = trial_dir

    def report(self, metrics, checkpoint=None):
        self.reports.append(metrics)

    def get_checkpoint(self):
        return None

    def get_context(self):
        return type("Ctx", (), {"get_trial_dir": lambda _self: str(self._trial_dir)})()


@pytest.mark.parametrize("beta, teacher_runs", [(0.0, False), (0.5, True)])
def test_teacher_runs_only_when_hidden_loss_is_on(tiny_teacher_run, monkeypatch, tmp_path, beta, teacher_runs):
    from transformers import BertForSequenceClassification

    from raydistill.platform.config import ExperimentConfig
    from raydistill.trainables import student_trial as student_module
    from raydistill.trainables.sweep import shared_data

    cfg, run, data, info = tiny_teacher_run
    cfg = ExperimentConfig.model_validate({**cfg.model_dump(mode="json"), "student": {
        **cfg.student.model_dump(mode="json"), "beta": beta, "epochs": 1}})
    calls = {"teacher": 0, "student": 0}
    forward = BertForSequenceClassification.forward

    def counting_forward(self, *args, **kwargs):
        calls["teacher" if self.config.num_hidden_layers == cfg.teacher.num_layers else "student"] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(BertForSequenceClassification, "forward", counting_forward)
    fake = _FakeTune(tmp_path / "trial")
    monkeypatch.setattr(student_module, "tune", fake)
    shared = shared_data(cfg, run, data, info["labeled"])
    shared["experiment_dir"] = str(tmp_path)
    student_module.train_student({"strategy": "top", "temperature": 2.0, "seed": 0, "alpha": 0.5, "lr": 0.003}, shared)
    assert calls["student"] > 0
    assert (calls["teacher"] > 0) is teacher_runs, calls
    assert fake.reports[-1]["loss/hidden"] > 0 if beta else fake.reports[-1]["loss/hidden"] == 0


@pytest.mark.parametrize("every_epoch", [True, False])
def test_validation_runs_every_epoch_or_only_after_the_last(tiny_teacher_run, monkeypatch, tmp_path, every_epoch):
    from raydistill.platform.config import ExperimentConfig
    from raydistill.trainables import student_trial as student_module
    from raydistill.trainables.sweep import shared_data

    cfg, run, data, info = tiny_teacher_run
    cfg = ExperimentConfig.model_validate({**cfg.model_dump(mode="json"), "student": {
        **cfg.student.model_dump(mode="json"), "epochs": 2, "validate_every_epoch": every_epoch}})
    passes = []
    validate = student_module._validate
    monkeypatch.setattr(student_module, "_validate", lambda *a: passes.append(1) or validate(*a))
    fake = _FakeTune(tmp_path / "trial")
    monkeypatch.setattr(student_module, "tune", fake)
    shared = {**shared_data(cfg, run, data, info["labeled"]), "experiment_dir": str(tmp_path)}
    student_module.train_student({"strategy": "top", "temperature": 2.0, "seed": 0, "alpha": 0.5, "lr": 0.003}, shared)
    assert [r["epoch"] for r in fake.reports] == [1, 2]
    assert ("val_accuracy" in fake.reports[0]) is every_epoch
    assert 0 < fake.reports[-1]["val_accuracy"] < 1 and len(passes) == (2 if every_epoch else 1)
    assert (tmp_path / "trial" / VAL_LOGITS).is_file()


def test_same_trial_gives_identical_logits_whatever_ran_before(tiny_teacher_run, monkeypatch, tmp_path):
    """A trial's seed sets every RNG at its start: (strategy, T, seed) run twice in one process
    (as a reused Tune actor would), with another trial and stray draws in between, gives
    bit-identical validation logits; another seed gives different ones."""
    from raydistill.trainables import student_trial as student_module
    from raydistill.trainables.sweep import shared_data

    cfg, run, data, info = tiny_teacher_run
    shared = {**shared_data(cfg, run, data, info["labeled"]), "experiment_dir": str(tmp_path)}

    def val_logits(seed: int, name: str) -> np.ndarray:
        monkeypatch.setattr(student_module, "tune", _FakeTune(tmp_path / name))
        trial = {"strategy": "uniform", "temperature": 2.0, "seed": seed, "alpha": 0.5, "lr": 0.003}
        student_module.train_student(trial, shared)
        return np.load(tmp_path / name / VAL_LOGITS)

    first = val_logits(0, "a")
    other = val_logits(1, "b")
    torch.rand(1000), np.random.rand(10)  # a reused actor's RNG is wherever the last trial left it
    again = val_logits(0, "c")
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_trial_resumed_mid_way_ends_where_an_uninterrupted_one_does(tiny_teacher_run, monkeypatch, tmp_path):
    """Kill a trial after epoch 1 and resume it from that checkpoint (model, AdamW moments,
    dropout RNG): its final validation logits equal an uninterrupted trial's, bit for bit."""
    import contextlib

    from raydistill.trainables import student_trial as student_module
    from raydistill.trainables.sweep import shared_data

    cfg, run, data, info = tiny_teacher_run
    assert cfg.student.epochs == 2
    shared = {**shared_data(cfg, run, data, info["labeled"]), "experiment_dir": str(tmp_path)}
    trial = {"strategy": "odd", "temperature": 2.0, "seed": 0, "alpha": 0.5, "lr": 0.003}

    class Keeping(_FakeTune):
        def report(self, metrics, checkpoint=None):
            super().report(metrics)
            shutil.copytree(checkpoint, tmp_path / f"epoch{metrics['epoch']}")

    class Resuming(_FakeTune):
        def get_checkpoint(self):
            saved = tmp_path / "epoch1"
            return type("C", (), {"as_directory": lambda _self: contextlib.nullcontext(str(saved))})()

    keeping = Keeping(tmp_path / "whole")
    monkeypatch.setattr(student_module, "tune", keeping)
    student_module.train_student(trial, shared)
    assert {"optimizer.pt", "torch_rng.npy"} <= {f.name for f in (tmp_path / "epoch1").iterdir()}
    resuming = Resuming(tmp_path / "resumed")
    monkeypatch.setattr(student_module, "tune", resuming)
    torch.rand(1000)  # a fresh actor's RNG is anywhere
    student_module.train_student(trial, shared)
    assert [r["epoch"] for r in resuming.reports] == [2]  # only the epoch the kill cost
    whole = np.load(tmp_path / "whole" / VAL_LOGITS)
    assert np.array_equal(whole, np.load(tmp_path / "resumed" / VAL_LOGITS))


def test_frozen_embeddings_stay_the_teachers_while_layers_learn(tiny_teacher_run, monkeypatch, tmp_path):
    from raydistill.platform.config import ExperimentConfig
    from raydistill.platform.models import load_classifier
    from raydistill.trainables import student_trial as student_module
    from raydistill.trainables.sweep import shared_data

    cfg, run, data, info = tiny_teacher_run
    cfg = ExperimentConfig.model_validate({**cfg.model_dump(mode="json"), "student": {
        **cfg.student.model_dump(mode="json"), "freeze_embeddings": True, "epochs": 1}})
    saved: dict[str, torch.Tensor] = {}
    monkeypatch.setattr(student_module, "save_classifier",
                        lambda model, path, **_: saved.update({k: v.clone() for k, v in model.state_dict().items()}))
    monkeypatch.setattr(student_module, "tune", _FakeTune(tmp_path / "trial"))
    shared = {**shared_data(cfg, run, data, info["labeled"]), "experiment_dir": str(tmp_path)}
    student_module.train_student({"strategy": "bottom", "temperature": 2.0, "seed": 0, "alpha": 0.5, "lr": 0.003}, shared)
    teacher = load_classifier(run.teacher).state_dict()
    embeddings = [k for k in saved if ".embeddings." in k]
    assert embeddings and all(torch.equal(saved[k], teacher[k]) for k in embeddings)
    layer0 = [k for k in saved if ".encoder.layer.0." in k and k.endswith("weight")]
    assert any(not torch.equal(saved[k], teacher[k]) for k in layer0)  # bottom copies layer 0, then trains it


def _finished_trials(experiment: Path) -> dict[str, str]:
    """Trial dir name -> result.json text, for trials Tune's own experiment state calls finished."""
    states = sorted(experiment.glob("experiment_state-*.json"), key=lambda p: p.name)  # newest session last
    if not states:
        return {}
    try:
        entries = json.loads(states[-1].read_text())["trial_data"]
    except (ValueError, KeyError):
        return {}  # caught mid-write; the next poll reads it whole
    finished = {}
    for trial_json, _ in entries:
        trial = json.loads(trial_json)
        result = experiment / trial["relative_logdir"] / "result.json"
        if trial["status"] == "TERMINATED" and result.is_file():
            finished[trial["relative_logdir"]] = result.read_text()
    return finished


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(tiny_teacher_run, teacher_only_run, tmp_path):
    from raydistill.pipeline import open_run
    from raydistill.trainables.sweep import run_sweep

    _, _, data, info = tiny_teacher_run
    root = teacher_only_run
    grid = ["--set", "sweep.strategies=[bottom,top]", "--set", "sweep.temperatures=[2.0]",
            "--set", "sweep.seeds=[0,1,2]"]
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1", "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    log = tmp_path / "sweep.log"
    proc = subprocess.Popen([sys.executable, "-m", "raydistill.cli", "sweep", str(root), *grid], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    experiment = root / "tune" / "students"
    try:
        deadline = time.monotonic() + 600
        while len(_finished_trials(experiment)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does to the driver
        proc.wait(timeout=120)
    finally:
        try:  # anything the driver left in its own session: ours to end, by group id
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = _completed_trials(root)
    assert 2 <= len(before) < 6, f"interrupt came too late: {len(before)} finished\n" + log.read_text()[-3000:]
    # A copied run directory may carry crafted pickles: resuming must never load them.
    marker = tmp_path / "pwned"
    (experiment / "tuner.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    for state in experiment.glob("experiment_state-*.json"):
        state.write_text(state.read_text().replace('"CLOUDPICKLE_FALLBACK", "value": "',
                                                   '"CLOUDPICKLE_FALLBACK", "value": "' + pickle.dumps(_Payload(marker)).hex()))
    run, cfg = open_run(root)
    assert run_sweep(cfg, run, data, info["labeled"], resume=True) == 6 - len(before)
    assert not marker.exists()
    after = _completed_trials(root)
    assert len(after) == 6
    for name, content in before.items():
        assert after[name] == content, f"finished trial {name} was re-run"
    df = load_results(root)
    assert len(df) == 6 and set(df["status"]) == {"TERMINATED"}  # one directory per trial
    assert set(df["epochs"]) == {cfg.student.epochs}  # a trial resumed mid-way keeps its first epochs' rows
    assert not (run.tune / "resume").exists()
    assert run_sweep(cfg, run, data, info["labeled"], resume=True) == 0  # nothing left to run


class _Payload:
    """Unpickling it creates ``marker``: proof that a file was loaded as code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _completed_trials(root: Path) -> dict[str, str]:
    """Trial dir name -> result.json text, for every trial the report counts as finished."""
    df = load_results(root)
    return {Path(d).name: (Path(d) / "result.json").read_text()
            for d in df.loc[df["status"] == "TERMINATED", "trial_dir"]}


def test_grid_points_cross_axes_and_take_tuned_values(make_tiny_config, tmp_path):
    """The grid is strategy x temperature x seed; alpha and lr come from the Optuna phase per
    strategy when it ran, from the config otherwise."""
    from raydistill.trainables.sweep import grid_points

    cfg = make_tiny_config(tmp_path)
    tuned = {"top": {"alpha": 0.9, "lr": 1e-4}}
    variants = grid_points(cfg, tuned)
    assert len(variants) == 4 * 2 * 2
    assert {(v["strategy"], v["temperature"], v["seed"]) for v in variants} == {
        (s, t, seed) for s in cfg.sweep.strategies for t in cfg.sweep.temperatures for seed in cfg.sweep.seeds}
    for v in variants:
        expected = (0.9, 1e-4) if v["strategy"] == "top" else (cfg.student.alpha, cfg.student.lr)
        assert (v["alpha"], v["lr"]) == expected


def test_a_trial_retried_after_a_deterministic_error_fails_at_once(tiny_teacher_run, monkeypatch, tmp_path):
    """A trial that meets one of raydistill's own errors (here: its teacher is gone) records
    it; Tune's retry of the trial raises the same error at once, loading nothing."""
    from raydistill.platform.errors import CheckpointError
    from raydistill.trainables import student_trial as student_module
    from raydistill.trainables.sweep import shared_data

    cfg, run, data, info = tiny_teacher_run
    fake = _FakeTune(tmp_path / "trial")
    (tmp_path / "trial").mkdir()
    monkeypatch.setattr(student_module, "tune", fake)
    shared = shared_data(cfg, run, data, info["labeled"])
    shared.update(experiment_dir=str(tmp_path), teacher_dir=str(tmp_path / "no-teacher"))
    trial = {"strategy": "top", "temperature": 2.0, "seed": 0, "alpha": 0.5, "lr": 0.003}
    with pytest.raises(CheckpointError) as first:
        student_module.train_student(trial, shared)
    loads = []
    monkeypatch.setattr(student_module, "load_classifier", lambda *a, **k: loads.append(a))
    with pytest.raises(CheckpointError) as retried:
        student_module.train_student(trial, shared)
    assert str(retried.value) == str(first.value) and loads == []
