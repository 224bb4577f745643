"""Shared fixtures: one local Ray cluster per test session (starting one costs ~6 s and ~0.8 GB)."""

from __future__ import annotations

import os

import pytest

# Before Ray is imported anywhere: no usage stats offline, fast Train reports, frequent Tune
# experiment snapshots (the resume test relies on them).
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def ray_cluster():
    """A session-wide local Ray with 2 CPUs; never attaches to a stray head, always shut down."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}},
        )
    yield ray
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        pass
    ray.shutdown()


# A tiny study on the embedded data (hidden 32, seq 32, pool 1.5k): big enough to learn
# something, small enough that the session's Ray tests share one run directory. 6 epochs a round:
# with the deterministic tokenizer, 4 gave 0.600 validation accuracy (majority 0.555), 6 give 0.645.
TINY_OVERRIDES = [
    "name=tiny",
    "data.max_train=2000",
    "data.max_eval=400",
    "tokenizer.vocab_size=2000",
    "tokenizer.max_length=32",
    "teacher.num_layers=4",
    "teacher.hidden_size=32",
    "teacher.num_heads=2",
    "teacher.intermediate_size=64",
    "teacher.epochs_per_round=6",
    "teacher.lr=0.003",
    "teacher.batch_size=32",
    "al.initial_labeled=1000",
    "al.query_size=250",
    "al.rounds=2",
    "al.compare_random=false",
    "al.score_batch_size=64",
    "student.num_layers=2",
    "student.epochs=2",
    "student.lr=0.003",
    "sweep.strategies=[bottom,top,odd,uniform]",
    "sweep.custom_layers=null",
    "sweep.temperatures=[1.0,4.0]",
    "sweep.seeds=[0,1]",
    "serve.cpus_per_replica=0.1",
    "bench.batch_sizes=[1,8]",
    "bench.concurrency=[1,8]",
    "bench.requests_per_level=20",
    "bench.seconds_per_level=3",
]


def tiny_config(runs_dir, *extra: str):
    from raydistill.platform.config import load_config
    from raydistill.pipeline import SMOKE_PRESET

    return load_config(SMOKE_PRESET, [f"runs_dir={runs_dir}", *TINY_OVERRIDES, *extra])


@pytest.fixture(scope="session")
def make_tiny_config():
    """``make_tiny_config(runs_dir, "key=value", ...)``: the tiny study's config plus overrides."""
    return tiny_config


@pytest.fixture(scope="session")
def tiny_teacher_run(ray_cluster, tmp_path_factory):
    """A run directory whose teacher stage has finished (2 Train workers, 2 AL rounds); ``info``
    is what the stage handed on (the labelled set) and the teacher's card."""
    from raydistill.pipeline import StudyRun, new_run, run_stages

    cfg = tiny_config(tmp_path_factory.mktemp("runs"))
    study = StudyRun(cfg, new_run(cfg))
    info = {**run_stages(study, ["teacher"])["teacher"], "card": study.card("teacher")}
    return cfg, study.run, study.data, info


@pytest.fixture
def teacher_only_run(tiny_teacher_run, tmp_path):
    """A copy of the tiny run with only its teacher stage finished: a sweep of its own to run."""
    import shutil

    from raydistill.platform import manifest
    from raydistill.platform.rundir import RunDir

    _, run, _, _ = tiny_teacher_run
    root = tmp_path / run.root.name
    shutil.copytree(run.root, root, ignore=shutil.ignore_patterns("tune", "student", "train"))
    copy = RunDir(root)
    for stage in set(manifest.finished(copy)) - {"teacher"}:
        manifest.forget(copy, stage)
    return root


@pytest.fixture(scope="session")
def tiny_study_run(tiny_teacher_run):
    """The same run after the sweep (4 strategies x 2 T x 2 seeds), winner export and report."""
    from raydistill.pipeline import run_study

    cfg, run, data, info = tiny_teacher_run
    summary = run_study(cfg, run, serve=False, force=True)  # a tiny teacher need not beat the majority
    return cfg, run, data, summary


@pytest.fixture(scope="session")
def repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_overrides():
    """The tiny study's ``--set`` overrides (for subprocesses and jobs)."""
    return list(TINY_OVERRIDES)


@pytest.fixture(scope="session")
def read_scalars():
    """``read_scalars(directory)``: every scalar in the TensorBoard event files under it, by
    tag: [(step, value), ...]. Reads the record format (length, crc, Event proto, crc) with
    tensorboardX's protos, so no TensorBoard install is needed."""
    import struct

    from tensorboardX.proto.event_pb2 import Event

    def read(directory):
        scalars: dict[str, list[tuple[int, float]]] = {}
        for path in sorted(directory.rglob("events.out.tfevents.*")):
            data, offset = path.read_bytes(), 0
            while offset < len(data):
                (length,) = struct.unpack_from("<Q", data, offset)
                event = Event.FromString(data[offset + 12:offset + 12 + length])
                offset += 12 + length + 4
                for value in event.summary.value:
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
        return scalars

    return read
