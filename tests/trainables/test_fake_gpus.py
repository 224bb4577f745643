"""Fractional GPUs on a cluster without any: ``ray.init(num_gpus=2)`` makes Ray advertise 2
logical GPUs with no device behind them, so the resource plumbing (preflight, placement of
scorers, trials, export tasks and Serve replicas with GPU shares, ``CUDA_VISIBLE_DEVICES``) runs
on a CPU machine, and the code must then pick the CPU, because torch sees no CUDA.

The cluster lives in a child process: the session-wide Ray the other tests share (``ray_cluster``)
is not disturbed. The child prints one JSON line of what it saw; its Ray processes carry a marker
in their environment, so any left behind are ended by PID (never ``ray stop``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

CHILD = textwrap.dedent(r'''
    import json, os, socket, sys, time, urllib.request
    from pathlib import Path

    import numpy as np
    import ray
    import torch

    from raydistill.platform.config import PerformanceConfig, config_from_dict, dump_config
    from raydistill.platform.data import Split
    from raydistill.platform.errors import ResourceError
    from raydistill.platform.models import build_teacher, predict_logits, save_classifier
    from raydistill.platform.text import build_tokenizer, encode, make_loader

    root = Path(sys.argv[1])
    out = {}
    SENTENCES = ["a warm and funny film", "the plot is thin", "two hours i will never get back",
                 "beautifully shot and wonderfully acted", "dull", "smart, tender and never dull",
                 "loud, incoherent and endless", "one of the best thrillers in years"]

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    # A tiny run directory: config, a 2-layer student with its tokenizer, label names.
    cfg = config_from_dict({
        "name": "fakegpu", "tokenizer": {"vocab_size": 120, "max_length": 24},
        "teacher": {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64},
        "student": {"num_layers": 1},
        "serve": {"cpus_per_replica": 0.2, "gateway_replicas": 1, "max_batch_size": 8},
    })
    (root / "config.yaml").write_text(dump_config(cfg))
    tokenizer = build_tokenizer(cfg.tokenizer, SENTENCES)
    model = build_teacher(cfg.teacher, 2, len(tokenizer), 24, seed=0, label_names=["neg", "pos"]).eval()
    save_classifier(model, root / "student", tokenizer)
    (root / "labels").mkdir()
    (root / "labels" / "label_names.json").write_text(json.dumps(["neg", "pos"]))
    pool = encode(tokenizer, Split(SENTENCES, np.zeros(len(SENTENCES), dtype=np.int64)), 24)

    ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=150 * 1024 * 1024)

    def wait_gpus_free(expected, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            free = ray.available_resources().get("GPU", 0.0)
            if abs(free - expected) < 1e-6 or time.monotonic() > deadline:
                return free
            time.sleep(0.1)

    try:
        # (a) preflight sees the logical GPUs: 3 per trial can never run, 0.5 can.
        from raydistill.trainables.resources import cluster_capacity
        from raydistill.trainables.sweep import preflight_sweep
        from raydistill.trainables.teacher import preflight_teacher

        capacity = cluster_capacity()
        out["total_gpus"] = capacity.total.get("GPU")
        out["largest_node_gpus"] = capacity.largest_node("GPU")
        try:
            preflight_sweep(config_from_dict({"sweep": {"gpus_per_trial": 3}}))
            out["sweep_3"] = "passed"
        except ResourceError as err:
            out["sweep_3"] = str(err)
        preflight_sweep(config_from_dict({"sweep": {"gpus_per_trial": 0.5}}))
        out["sweep_half"] = "passed"
        try:  # scorers run all at once beside the Train workers: 2 x 1.5 GPUs > 2
            preflight_teacher(config_from_dict({"al": {"scorers": 2, "gpus_per_scorer": 1.5}}))
            out["scorers_3"] = "passed"
        except ResourceError as err:
            out["scorers_3"] = str(err)
        preflight_teacher(config_from_dict({"al": {"scorers": 2, "gpus_per_scorer": 0.5}}))
        out["scorers_1"] = "passed"

        # (b) a half-GPU actor is placed, holds its share while it lives, and runs on the CPU.
        @ray.remote(num_cpus=0, num_gpus=0.5)
        class Probe:
            def look(self):
                # What ray.train.torch.get_device() answers in a Train worker holding a GPU share
                # (Train V2 allows that call only inside trainer.fit): a CUDA device, which the
                # teacher used to take as is, and torch here cannot use.
                from ray.air._internal.torch_utils import get_devices
                from raydistill.platform.fastpath import select_device
                from raydistill.trainables.student_trial import _device

                ray_device = lambda: get_devices()[0]
                return {"gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                        "torch_cuda": torch.cuda.is_available(),
                        "ray_train_device": str(ray_device()),
                        "teacher_device": str(select_device(True, ray_device)),
                        "trial_device": str(_device(config_from_dict({"sweep": {"gpus_per_trial": 0.5}})))}

        probe = Probe.remote()
        out["probe"] = ray.get(probe.look.remote(), timeout=120)
        out["gpus_free_with_probe"] = wait_gpus_free(1.5)
        ray.kill(probe)
        out["gpus_free_after_probe"] = wait_gpus_free(2.0)

        # The pool Scorer with half a GPU scores on the CPU, the same as in-process.
        from raydistill.platform.acquisition import score_batches
        from raydistill.platform.prepared import save_encoded
        from raydistill.trainables.active_learner import Scorer, ScoringPlan, shard_batches

        plan = ScoringPlan("entropy", 1, 0.25, 0.5, 4, 2, tokenizer.pad_token_id, 1, PerformanceConfig())
        batches = shard_batches(pool.lengths, np.arange(len(pool)), 4)[0]
        save_encoded(root / "pool", pool)
        scorer = Scorer.options(num_cpus=0.25, num_gpus=0.5).remote(plan, str(root / "pool"))
        weights = ray.put({k: v.detach() for k, v in model.state_dict().items()})
        got = ray.get(scorer.score.remote(model.config.to_dict(), [weights], batches, 0, 1), timeout=180)
        want = score_batches(model, pool, batches, "entropy", pad_token_id=tokenizer.pad_token_id,
                             mc_samples=2, seed=0, round=1)
        out["scorer_same"] = bool(np.array_equal(got[0], want[0]) and np.allclose(got[1], want[1], atol=1e-6))
        out["gpus_free_with_scorer"] = wait_gpus_free(1.5)
        ray.kill(scorer)
        wait_gpus_free(2.0)

        # The export task (the teacher's logits cache, the winners' test logits) with half a GPU.
        from raydistill.trainables.inference import models_split_logits

        logits = models_split_logits([str(root / "student")], {"pool": pool}, 4, tokenizer.pad_token_id,
                                     num_gpus=0.5, perf=PerformanceConfig())[0]["pool"]
        local = predict_logits(model, make_loader(pool, 4, pad_token_id=tokenizer.pad_token_id), torch.device("cpu"))
        out["export_same"] = bool(np.allclose(logits, local.numpy(), atol=1e-5))

        # (c) Serve: more GPU per replica than the cluster has is refused before anything starts;
        # a quarter GPU is placed, and the replica answers on the CPU.
        from ray import serve
        from raydistill.serve.app import deploy

        try:
            deploy(root, port=free_port(), token="", models=["student"], write_config=False,
                   gpus_per_replica=3)
            out["serve_3"] = "passed"
        except ResourceError as err:
            out["serve_3"] = str(err)
        url = deploy(root, port=free_port(), token="", models=["student"], write_config=False,
                     gpus_per_replica=0.25)
        try:
            out["gpus_free_with_replica"] = wait_gpus_free(1.75)
            with urllib.request.urlopen(f"{url}/v1/models", timeout=60) as r:
                out["served_device"] = json.load(r)["models"][0]["device"]
            request = urllib.request.Request(f"{url}/v1/classify", data=json.dumps({"texts": SENTENCES[:3]}).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as r:
                out["served_predictions"] = json.load(r)["predictions"]
        finally:
            serve.shutdown()
    finally:
        ray.shutdown()
    print("RESULT " + json.dumps(out), flush=True)
''')


def _marked(marker: str) -> list[int]:
    needle = f"RAYDISTILL_TEST_NODE={marker}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if needle in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def _end_marked(marker: str, grace_s: float = 10.0) -> None:
    """SIGKILL whatever the child's Ray left behind (ray.shutdown normally ends it all)."""
    deadline = time.monotonic() + grace_s
    while _marked(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in _marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_fractional_gpus_are_placed_and_the_work_runs_on_the_cpu(tmp_path) -> None:
    script = tmp_path / "fake_gpus.py"
    script.write_text(CHILD)
    marker = f"fake-gpus-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({"RAYDISTILL_TEST_NODE": marker, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    log = tmp_path / "child.log"
    try:
        with log.open("w") as f:
            proc = subprocess.run([sys.executable, str(script), str(run_dir)], env=env, stdout=f,
                                  stderr=subprocess.STDOUT, timeout=480, start_new_session=True)
    finally:
        _end_marked(marker)
    text = log.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"the child failed (rc {proc.returncode}):\n{text[-6000:]}"
    seen = json.loads(lines[-1][len("RESULT "):])

    # (a) preflight
    assert seen["total_gpus"] == 2.0 and seen["largest_node_gpus"] == 2.0
    assert "needs 3 GPU" in seen["sweep_3"] and "sweep.gpus_per_trial = 3" in seen["sweep_3"]
    assert seen["sweep_half"] == "passed"
    assert "needs 3 GPU at once" in seen["scorers_3"] and "al.gpus_per_scorer" in seen["scorers_3"]
    assert seen["scorers_1"] == "passed"
    # (b) placement and the device actually used
    probe = seen["probe"]
    assert probe["gpu_ids"] == ["0"] or probe["gpu_ids"] == ["1"], probe
    assert probe["cuda_visible_devices"] == probe["gpu_ids"][0]  # Ray set it for the share
    assert probe["torch_cuda"] is False
    assert probe["ray_train_device"].startswith("cuda")  # what would have crashed on .to(device)
    assert probe["teacher_device"] == "cpu" and probe["trial_device"] == "cpu"
    assert seen["gpus_free_with_probe"] == pytest.approx(1.5)
    assert seen["gpus_free_after_probe"] == pytest.approx(2.0)
    assert seen["scorer_same"] is True and seen["gpus_free_with_scorer"] == pytest.approx(1.5)
    assert seen["export_same"] is True
    # (c) Serve
    assert "needs 3 GPU" in seen["serve_3"] and "serve.gpus_per_replica" in seen["serve_3"]
    assert seen["gpus_free_with_replica"] == pytest.approx(1.75)
    assert seen["served_device"] == "cpu"
    assert len(seen["served_predictions"]) == 3
    assert {p["label"] for p in seen["served_predictions"]} <= {"neg", "pos"}
