"""The teacher stage on a local Ray: active-learning rounds, parallel scoring, idempotent
acquisition, and recovery from a killed actor or a crashed Train worker."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from raydistill.platform.errors import ResourceError
from raydistill.platform.models import load_classifier
from raydistill.platform.rundir import load_array

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

MARGIN = 0.05  # the teacher must beat the majority-class rate by 5 accuracy points


def _assert_label_sets(cfg, curve, labeled, pool_size):
    counts = [p["labeled_count"] for p in curve]
    assert counts == [cfg.al.initial_labeled + r * cfg.al.query_size for r in range(cfg.al.rounds + 1)]
    assert len(labeled) == len(set(labeled)) == counts[-1]
    assert 0 <= min(labeled) and max(labeled) < pool_size


def test_teacher_rounds_grow_labels_and_learn(tiny_teacher_run):
    cfg, run, data, info = tiny_teacher_run
    import pandas as pd

    curve = pd.read_csv(run.al_curve)
    main = curve[curve["acquisition"] == cfg.al.acquisition].to_dict("records")
    _assert_label_sets(cfg, main, info["labeled"], len(data.dataset.train))
    # The pool is the train split only: no labelled text is a validation or test text.
    held_out = set(data.dataset.validation.texts) | set(data.dataset.test.texts)
    assert not {data.dataset.train.texts[i] for i in info["labeled"]} & held_out
    majority = np.bincount(data.dataset.validation.labels).max() / len(data.dataset.validation)
    accuracy = info["card"].validation["accuracy"]
    assert accuracy >= majority + MARGIN, (accuracy, majority)
    assert (run.al / "curve.png").stat().st_size > 0


def test_saved_teacher_matches_training(tiny_teacher_run):
    """The exported directory loads with from_pretrained and reproduces the in-training accuracy."""
    cfg, run, data, info = tiny_teacher_run
    from raydistill.platform.models import predict_logits
    from raydistill.platform.text import make_loader
    import torch

    model = load_classifier(run.teacher)
    logits = predict_logits(model, make_loader(data.encoded["validation"], 64, pad_token_id=data.pad_token_id),
                            torch.device("cpu"))
    np.testing.assert_allclose(logits.numpy(), load_array(run.teacher_logits("validation")), atol=1e-5)
    import pandas as pd

    curve = pd.read_csv(run.al_curve)
    last = curve[curve["acquisition"] == cfg.al.acquisition]["val_accuracy"].iloc[-1]
    acc = float((logits.argmax(-1).numpy() == data.encoded["validation"].labels).mean())
    assert acc == pytest.approx(last, abs=1e-6)


def _learner(run, data, cfg, name, scorers, acquisition, shard_texts):
    from raydistill.trainables.active_learner import ActiveLearner, ScoringPlan

    plan = ScoringPlan(acquisition, scorers, 0.25, 0.0, 64, 3, data.pad_token_id, shard_texts=shard_texts)
    learner_state = {"pool_size": len(data.encoded["train"]), "initial_labeled": cfg.al.initial_labeled,
                     "query_size": cfg.al.query_size, "rounds": cfg.al.rounds, "seed": cfg.seed}
    return ActiveLearner.remote(str(run.root / "scratch" / name), learner_state, plan, str(data.files["train"]))


@pytest.mark.parametrize("acquisition", ["entropy", "bald"])
def test_two_scorers_pick_what_one_picks_and_acquire_is_idempotent(tiny_teacher_run, acquisition):
    """One scorer reading the pool in one shard and two scorers taking 128-text shards as they
    free up pick the same set. BALD too: its MC-dropout masks are seeded per (seed, round,
    batch), not per scorer or shard."""
    cfg, run, data, _ = tiny_teacher_run
    assert len(data.encoded["train"]) > 4 * 128  # so two scorers each take several shards
    model = load_classifier(run.teacher)
    weights = ray.put({k: v for k, v in model.state_dict().items()})
    picks = {}
    for scorers, shard_texts in ((1, 1 << 20), (2, 128)):
        learner = _learner(run, data, cfg, f"{acquisition}-s{scorers}", scorers, acquisition, shard_texts)
        picks[scorers] = ray.get(learner.acquire.remote(1, [weights], model.config.to_dict()))
        # A second call for the same round (a retry) returns the same set, even with other weights.
        other = ray.put({k: v * 0 for k, v in model.state_dict().items()})
        assert ray.get(learner.acquire.remote(1, [other], model.config.to_dict())) == picks[scorers]
        ray.kill(learner)
    assert picks[1] == picks[2]
    assert len(picks[1]) == cfg.al.initial_labeled + cfg.al.query_size


def test_preflight_fails_fast_when_resources_cannot_fit(ray_cluster, make_tiny_config, tmp_path):
    from raydistill.pipeline import new_run
    from raydistill.platform.prepared import prepare_data
    from raydistill.trainables.teacher import train_teacher

    cfg = make_tiny_config(tmp_path, "teacher.num_workers=2", "teacher.cpus_per_worker=1", "al.scorers=2")
    run = new_run(cfg)
    data = prepare_data(cfg, run)
    started = time.monotonic()
    with pytest.raises(ResourceError, match="teacher.num_workers x teacher.cpus_per_worker"):
        train_teacher(cfg, run, data, "entropy")
    assert time.monotonic() - started < 10


def test_a_refused_preflight_leaves_no_run_directory(ray_cluster, make_tiny_config, tmp_path, capsys):
    from raydistill.cli import main
    from raydistill.platform.config import dump_config

    cfg = make_tiny_config(tmp_path / "runs", "teacher.num_workers=8", "teacher.cpus_per_worker=1")
    path = tmp_path / "big.yaml"
    path.write_text(dump_config(cfg))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "the teacher stage needs 8" in err and "teacher.num_workers" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _kill_actor_after_round(run, acquisition, round, killed):
    """Kill the ActiveLearner (restartable) once its persisted curve has reached ``round``."""
    import json

    state = run.al / acquisition / "state.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if state.is_file():
            curve = json.loads(state.read_text())["curve"]
            if any(p["round"] >= round for p in curve):
                for actor in ray.util.list_named_actors(all_namespaces=True):
                    if actor["name"].startswith(f"al-{run.root.name}-{acquisition}"):
                        handle = ray.get_actor(actor["name"], namespace=actor["namespace"])
                        ray.kill(handle, no_restart=False)
                        killed.append(actor["name"])
                return
        time.sleep(0.2)


def _crash_once(round: int, rank: int, marker: Path, calls: Path):
    """A Train round hook that logs every (round, rank) start to ``calls`` and kills its worker
    once, at ``round`` on ``rank``, after a pause that lets Train register the previous round's
    checkpoint (so the restart resumes from it, not from scratch). The marker file stops the
    restarted worker from crashing again. Pickled to the workers by value."""
    def hook(at_round: int, at_rank: int) -> None:
        with calls.open("a") as f:
            f.write(f"{at_round} {at_rank}\n")
        if (at_round, at_rank) == (round, rank) and not marker.exists():
            time.sleep(5)
            marker.write_text(f"crashed rank {rank} at round {round}\n")
            os._exit(1)

    return hook


def _deterministic_error_at(round: int, rank: int, calls: Path):
    """A round hook that logs every (round, rank) start and raises a deterministic error (one of
    raydistill's own, as a too-small pool would) at ``round`` on ``rank``, every time."""
    def hook(at_round: int, at_rank: int) -> None:
        from raydistill.platform.errors import PoolExhaustedError

        with calls.open("a") as f:
            f.write(f"{at_round} {at_rank}\n")
        if (at_round, at_rank) == (round, rank):
            raise PoolExhaustedError("round 1 asks for 250 more examples but the pool has 10 left")

    return hook


def test_a_deterministic_error_is_raised_once_not_retried(ray_cluster, make_tiny_config, tmp_path):
    """Train restarts the worker group on any error (here up to 2 times); a restarted group
    that finds the recorded deterministic error ends at once, and the driver raises it as
    itself: round 1 runs once, not three times."""
    from raydistill.pipeline import new_run
    from raydistill.platform.errors import PoolExhaustedError
    from raydistill.platform.prepared import prepare_data
    from raydistill.trainables.teacher import train_teacher

    cfg = make_tiny_config(tmp_path, "teacher.max_failures=2", "al.rounds=1")
    run = new_run(cfg)
    data = prepare_data(cfg, run)
    calls = tmp_path / "round_starts.txt"
    with pytest.raises(PoolExhaustedError, match="the pool has 10 left") as err:
        train_teacher(cfg, run, data, "entropy", round_hook=_deterministic_error_at(1, 1, calls))
    assert "Traceback" not in str(err.value)
    starts = calls.read_text().split("\n")
    assert starts.count("1 1") == 1, f"the deterministic error was retried: {starts}"
    assert starts.count("0 0") == 1, f"round 0 ran again: {starts}"


def test_killed_actor_and_crashed_worker_give_the_same_label_sets(tiny_teacher_run, make_tiny_config, tmp_path):
    """One run survives a killed ActiveLearner (after round 0) and a Train worker crashing once
    at the start of round 1; its per-round label sets equal the undisturbed run's. Round 2's
    picks depend on round 1's training after the restart: they match only because the
    checkpoint carries every rank's RNG state (dropout) and the data order is seeded per round."""
    from raydistill.pipeline import new_run
    from raydistill.platform.prepared import prepare_data
    from raydistill.trainables.teacher import train_teacher

    cfg0, run0, _, _ = tiny_teacher_run
    cfg = make_tiny_config(tmp_path)
    run = new_run(cfg)
    # WordPiece training can break frequency ties differently; share the vocabulary so the
    # two runs differ only in the faults.
    shutil.copytree(run0.tokenizer, run.tokenizer)
    data = prepare_data(cfg, run)
    killed: list[str] = []
    killer = threading.Thread(target=_kill_actor_after_round, args=(run, "entropy", 0, killed), daemon=True)
    killer.start()
    marker = tmp_path / "crashed.marker"
    calls = tmp_path / "round_starts.txt"
    result = train_teacher(cfg, run, data, "entropy", round_hook=_crash_once(1, 1, marker, calls))
    killer.join(timeout=5)
    assert killed, "the actor was never killed"
    assert marker.exists(), "the worker fault never fired"
    starts = calls.read_text().split("\n")
    assert starts.count("0 0") == starts.count("0 1") == 1, f"round 0 ran again: resumed from scratch {starts}"
    assert starts.count("1 0") == starts.count("1 1") == 2  # round 1 began, crashed, began again
    _assert_label_sets(cfg, result.curve, result.labeled, len(data.encoded["train"]))
    import json

    undisturbed = json.loads((run0.al / "entropy" / "state.json").read_text())["learner"]
    disturbed = json.loads((run.al / "entropy" / "state.json").read_text())["learner"]
    assert disturbed == undisturbed
