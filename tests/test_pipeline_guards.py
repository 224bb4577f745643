"""Guards that run before any work (no Ray): ``--resume --set`` / ``sweep RUN --set`` may not
change what a built stage was computed from, an unreachable cluster is one clear error, and the files a
finished stage handed on are checked against the run's manifest."""

from __future__ import annotations

import json
import os

import pytest

from raydistill.pipeline import open_run
from raydistill.platform import manifest
from raydistill.platform.config import config_from_dict, dump_config, load_config
from raydistill.platform.errors import CheckpointError, ConfigError
from raydistill.platform.rundir import RunDir

pytestmark = pytest.mark.unit


@pytest.fixture
def run(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "study-20261201-000000")
    run.root.mkdir(parents=True)
    run.config.write_text(dump_config(config_from_dict({"name": "study", "teacher": {"lr": 1e-4}})))
    run.legacy_stages.write_text(json.dumps({"teacher": {"finished": "2026-12-01T00:00:00", "labeled": [1, 2]}}))
    return run


@pytest.mark.parametrize("override", ["teacher.lr=3e-4", "data.max_train=5000", "seed=1", "al.query_size=7"])
def test_changing_an_input_of_the_finished_teacher_is_refused(run, override) -> None:
    before = run.config.read_text()
    with pytest.raises(ConfigError) as err:
        open_run(run.root, [override])
    key = override.split("=")[0]
    assert f"{key}: " in str(err.value) and "the teacher stage was built with the old value" in str(err.value)
    assert "raydistill run" in str(err.value)
    assert run.config.read_text() == before  # nothing written


@pytest.mark.parametrize("override", ["serve.port=8765", "bench.requests_per_level=10",
                                      "teacher.cpus_per_worker=0.25", "sweep.max_failures=3",
                                      "student.lr=1e-3", "sweep.seeds=[0,1,2]"])
def test_serving_resources_and_the_unstarted_sweep_may_change(run, override) -> None:
    _, cfg = open_run(run.root, [override])
    assert load_config(run.config) == cfg


def test_the_sweep_is_pinned_once_it_started(run) -> None:
    run.tune_experiment.mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"student\.lr: 0\.002 -> 0\.001 \(the sweep stage"):
        open_run(run.root, ["student.lr=1e-3"])
    _, cfg = open_run(run.root, ["serve.port=8765"])
    assert cfg.serve.port == 8765


def test_attaching_to_an_address_where_nothing_listens_is_one_clear_error(monkeypatch) -> None:
    import socket
    import time

    from raydistill.session import ray_session
    from raydistill.platform.errors import ClusterError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # whatever Ray this session runs
    started = time.monotonic()
    with pytest.raises(ClusterError, match=rf"could not attach to the Ray cluster at 127\.0\.0\.1:{port}.*RAY_AUTH_MODE=token"):
        with ray_session():
            pass
    assert time.monotonic() - started < 10


def test_files_a_stage_handed_on_are_checked_against_the_manifest(run, tmp_path) -> None:
    from raydistill.pipeline import record_stage

    run.teacher.mkdir()
    (run.teacher / "model.safetensors").write_bytes(b"weights" * 100)
    (run.teacher / "train_logits.npy").write_bytes(b"logits")
    run.labels.mkdir()
    (run.labels / "validation.npy").write_bytes(b"labels")
    record_stage(run, load_config(run.config), "teacher", {"labeled": [1, 2]})
    recorded = json.loads((run.root / "manifest.json").read_text())["files"]
    assert set(recorded) == {"teacher/model.safetensors", "teacher/train_logits.npy", "labels/validation.npy"}
    open_run(run.root)  # untouched: fine

    moved = tmp_path / "moved" / run.root.name
    import shutil

    shutil.copytree(run.root, moved)
    open_run(moved)  # paths are relative: a copied run still checks

    (run.teacher / "model.safetensors").write_bytes(b"weights" * 99)  # truncated
    (run.labels / "validation.npy").unlink()
    with pytest.raises(CheckpointError) as err:
        open_run(run.root)
    text = str(err.value)
    assert "teacher/model.safetensors changed since the teacher stage wrote it" in text
    assert "labels/validation.npy is missing (written by the teacher stage)" in text
    assert "teacher/train_logits.npy" not in text  # only what changed is named

    (moved / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest.json is corrupt"):
        open_run(moved)


def test_a_stage_no_longer_marked_finished_is_not_checked(run) -> None:
    from raydistill.pipeline import record_stage

    run.student.mkdir()
    (run.student / "model.safetensors").write_bytes(b"student")
    record_stage(run, load_config(run.config), "winner", {})
    (run.student / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="student/model.safetensors is missing"):
        open_run(run.root)
    manifest.forget(run, "winner")  # the winner will be exported again
    open_run(run.root)


def test_a_hand_edited_config_or_data_file_is_refused_naming_what_changed(run, tmp_path) -> None:
    """The manifest records what each stage was built from; an edit behind ``--set``'s back
    (config.yaml in an editor, the data file replaced) is refused like the ``--set`` would be."""
    import pandas as pd

    from raydistill.pipeline import record_stage
    from raydistill.platform.data import load_dataset

    data = tmp_path / "reviews.csv"
    pd.DataFrame({"text": [f"review {i} {'good' if i % 2 else 'bad'}" for i in range(200)],
                  "label": [i % 2 for i in range(200)]}).to_csv(data, index=False)
    cfg = config_from_dict({"name": "study", "data": {"source": "file", "path": str(data)}})
    run.config.write_text(dump_config(cfg))
    record_stage(run, cfg, "teacher", {"labeled": [1, 2]}, load_dataset(cfg.data).fingerprint())
    stages = json.loads((run.root / "manifest.json").read_text())["stages"]
    assert stages["teacher"]["inputs"]["teacher.lr"] == cfg.teacher.lr
    assert "teacher.cpus_per_worker" not in stages["teacher"]["inputs"]  # placement is free
    assert stages["teacher"]["code"].startswith("raydistill ")
    open_run(run.root)

    run.config.write_text(dump_config(load_config(run.config, ["teacher.lr=0.5"])))  # an editor's change
    with pytest.raises(CheckpointError, match=r"teacher\.lr: 0\.001 -> 0\.5 \(the teacher stage was built"):
        open_run(run.root)
    run.config.write_text(dump_config(cfg))

    pd.read_csv(data).assign(label=lambda df: 1 - df["label"]).to_csv(data, index=False)
    with pytest.raises(CheckpointError, match=r"data_sha256: '[0-9a-f]+' -> '[0-9a-f]+' \(the teacher stage"):
        open_run(run.root)


def test_latest_pointer_moves_to_the_newest_run(tmp_path):
    old, new = RunDir(tmp_path / "s-1"), RunDir(tmp_path / "s-2")
    for run in (old, new):
        run.root.mkdir()
    assert old.point_latest("s").resolve() == old.root.resolve()
    link = new.point_latest("s")
    assert link == tmp_path / "s-latest" and link.resolve() == new.root.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s-1", "s-2", "s-latest"]  # no temp link left


def test_code_version_comes_from_the_environment_under_a_job(monkeypatch):
    """``ray job submit`` uploads the working directory without .git: the job passes the SHA."""
    from raydistill.pipeline import GIT_SHA_ENV, _git_sha

    monkeypatch.setenv(GIT_SHA_ENV, "  abc123  ")
    assert _git_sha() == "abc123"
    monkeypatch.delenv(GIT_SHA_ENV)
    sha = _git_sha()  # this checkout's own commit (None only outside a git checkout)
    assert sha is None or len(sha) == 40


def test_a_teacher_that_does_not_beat_the_majority_stops_the_study_unless_forced(run, caplog) -> None:
    import numpy as np

    from raydistill.pipeline import _check_teacher
    from raydistill.platform.errors import TeacherError
    from raydistill.platform.rundir import save_array

    labels = np.array([1] * 60 + [0] * 40)
    save_array(run.eval_labels("validation"), labels)
    save_array(run.teacher_logits("validation"), np.tile(np.array([[0.0, 1.0]], np.float32), (100, 1)))
    with pytest.raises(TeacherError, match=r"the teacher \(0.600 on validation\) does not beat the majority class "
                                           r"\(0.600\) by a significant margin: \+0.0 points .* or run again with --force"):
        _check_teacher(run, force=False)
    _check_teacher(run, force=True)  # goes on, warning
    assert "--force: going on; the report will say so first" in caplog.text
    save_array(run.teacher_logits("validation"), np.eye(2, dtype=np.float32)[labels])  # always right
    _check_teacher(run, force=False)


@pytest.mark.parametrize("dashboard", [False, True])
def test_a_local_run_starts_the_dashboard_only_when_asked_and_on_loopback(monkeypatch, dashboard) -> None:
    import ray

    from raydistill.cli import _parser
    from raydistill.session import ray_session

    seen = {}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with ray_session(dashboard=dashboard):
        pass
    assert seen["address"] == "local" and seen["include_dashboard"] is dashboard
    assert os.environ["RAY_COLOR_PREFIX"] == "0"  # the raylet's lines reach the console without colour codes
    if dashboard:
        assert (seen["dashboard_host"], seen["dashboard_port"]) == ("127.0.0.1", 8265)
    assert _parser().parse_args(["run", "--dashboard"]).dashboard is True


def test_serve_ingress_haproxy_switches_a_private_rays_serve_and_only_while_it_runs(monkeypatch, caplog) -> None:
    """``serve.ingress: haproxy`` sets Ray's switch before a private Ray starts (Serve reads it
    then) and takes it away after; an attached cluster's ingress is its own: say so."""
    import ray

    from raydistill.session import ray_session

    switch = "RAY_SERVE_ENABLE_HA_PROXY"
    at_init = {}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(switch, raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: at_init.update({switch: os.environ.get(switch)}))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with ray_session(ingress="haproxy"):
        assert os.environ[switch] == "1"
    assert at_init[switch] == "1" and switch not in os.environ
    with ray_session():
        pass
    assert at_init[switch] is None
    monkeypatch.setenv("RAY_ADDRESS", "ray://cluster:10001")
    with ray_session(ingress="haproxy"):
        assert switch not in os.environ
    assert f"start it with {switch}=1" in caplog.text
    with pytest.raises(ConfigError, match="ingress"):
        load_config(None, ["serve.ingress=nginx"])


def test_an_older_runs_stages_json_moves_into_the_manifest_once(run) -> None:
    """Older runs kept the finished stages in stages.json: the first read moves them into the
    one ledger (with what they handed on) and removes the file; a record then adds to them."""
    assert manifest.finished(run) == {"teacher": {"labeled": [1, 2]}}
    assert not run.legacy_stages.exists()
    ledger = json.loads(run.manifest.read_text())["stages"]
    assert ledger["teacher"]["finished"] == "2026-12-01T00:00:00"
    from raydistill.pipeline import record_stage

    record_stage(run, load_config(run.config), "winner", {})
    assert set(manifest.finished(run)) == {"teacher", "winner"}
    manifest.forget(run, "winner")
    assert set(manifest.finished(run)) == {"teacher"}
