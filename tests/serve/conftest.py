"""A tiny run directory for the Serve tests: config, a 4-layer teacher and a 2-layer student
(hidden 32) with a WordPiece tokenizer trained on a few sentences, student provenance, and a
finished study on disk (a small sweep in Tune's file format, the AL curve, the report and its
plots, written by the real report writer) for the results page.

Built once per session in seconds; nothing is downloaded. ``served`` deploys it once for the
whole package (``__init__.py`` makes tests/serve a package, so the fixture's package scope ends
with this folder)."""

from __future__ import annotations

import json
import shutil
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

POSITIVE = [
    "a warm, funny and moving film",
    "the cast is terrific and the script is sharp",
    "one of the best thrillers in years",
    "beautifully shot and wonderfully acted",
    "smart, tender and never dull",
    "a small film with a big heart",
    "quietly devastating and worth every minute",
    "the director handles every scene with grace",
]
NEGATIVE = [
    "two hours i will never get back",
    "the plot is thin and the jokes fall flat",
    "tedious, overlong and oddly joyless",
    "neither scary nor funny, it just sits there",
    "loud, incoherent and endless action",
    "a clumsy and predictable screenplay",
    "by the halfway point i stopped caring",
    "the worst film of the year by far",
]
LABEL_NAMES = ["negative", "positive"]
TEACHER_LAYERS = [0, 3]
# The study on disk: validation accuracy per seed of each (strategy, temperature) cell, on the 16
# validation sentences (multiples of 1/16, so every trial's val_logits.npy matches its number).
# uniform T=2 has the best mean and its seed 0 is the exported student (provenance below); the
# policy finds bottom worse and the rest inconclusive (16 sentences cannot show equivalence).
SWEEP = {
    ("uniform", 2.0): [0.8125, 0.8125],
    ("uniform", 1.0): [0.8125, 0.75],
    ("top", 2.0): [0.75, 0.75],
    ("top", 1.0): [0.6875, 0.75],
    ("bottom", 2.0): [0.4375, 0.375],
    ("bottom", 1.0): [0.375, 0.375],
}
SWEEP_LAYERS = {"uniform": TEACHER_LAYERS, "top": [2, 3], "bottom": [0, 1]}
EPOCHS = 2
# The teacher's AL curve: round 0 is shared by both arms; the last entropy round is the teacher.
AL_CURVE = {"entropy": [(4, 0.6875), (6, 0.875)], "random": [(4, 0.6875), (6, 0.75)]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_data(root: Path) -> None:
    """train/validation/test JSONL: the sentences above, so the bench finds validation texts."""
    rows = [{"text": t, "label": 1} for t in POSITIVE] + [{"text": t, "label": 0} for t in NEGATIVE]
    root.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        lines = [json.dumps(r) for r in rows]
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _bert(num_layers: int, vocab_size: int, seed: int):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=num_layers, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, num_labels=2,
        id2label=dict(enumerate(LABEL_NAMES)), label2id={n: i for i, n in enumerate(LABEL_NAMES)},
        # a wide init spreads the logits, so argmax is never a near-tie that padding could flip
        initializer_range=0.5,
    )
    return BertForSequenceClassification(config).eval()


def _logits(labels, accuracy: float, seed: int):
    """Binary logits [N, 2] whose argmax is right on exactly round(accuracy * N) examples."""
    import numpy as np

    rng = np.random.default_rng(seed)
    preds = labels.copy()
    wrong = rng.permutation(len(labels))[: len(labels) - int(round(accuracy * len(labels)))]
    preds[wrong] = 1 - preds[wrong]
    logits = np.zeros((len(labels), 2), np.float32)
    logits[np.arange(len(labels)), preds] = rng.uniform(0.5, 3.0, len(labels))
    return logits


def _write_study(root: Path) -> None:
    """What the teacher stage and the sweep leave on disk, in their formats (Tune 2.60's trial
    directories: params.json, result.json lines, val_logits.npy), then the real report writer:
    report.md, results.csv, summary.csv and plots/*.png."""
    import numpy as np

    from raydistill.platform.report import write_report
    from raydistill.platform.report.run_files import count_safetensors_params
    from raydistill.platform.rundir import RunDir, save_array

    run = RunDir(root)
    labels = np.array([1] * len(POSITIVE) + [0] * len(NEGATIVE))  # the validation split's order
    save_array(run.eval_labels("validation"), labels)
    save_array(run.teacher_logits("validation"), _logits(labels, 0.875, 7))
    params = count_safetensors_params(run.student)
    for index, ((strategy, temperature), accs) in enumerate(SWEEP.items()):
        for seed, acc in enumerate(accs):
            cfg = {"strategy": strategy, "temperature": temperature, "seed": seed, "alpha": 0.5, "lr": 0.003}
            trial_id = f"5e1f0_{2 * index + seed:05d}"
            trial = (run.tune_experiment / f"student_{trial_id}_{2 * index + seed}_seed={seed},"
                     f"strategy={strategy},temperature={temperature:.4f}_2026-11-23_16-42-03")
            trial.mkdir(parents=True)
            (trial / "params.json").write_text(json.dumps(cfg))
            rows = [{"epoch": e, "train_loss": 0.7 - 0.1 * e, "val_loss": 0.65 - 0.05 * e,
                     "val_accuracy": acc - 0.0625 * (EPOCHS - 1 - e), "fidelity": acc, "params": params,
                     "layers": SWEEP_LAYERS[strategy], "strategy": strategy, "trial_id": trial_id,
                     "training_iteration": e + 1, "done": e == EPOCHS - 1, "timestamp": 1795452127 + e,
                     "time_total_s": 1.5 * (e + 1), "config": cfg} for e in range(EPOCHS)]
            (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
            np.save(trial / "val_logits.npy", _logits(labels, acc, 100 + 2 * index + seed))
    lines = ["acquisition,round,labeled_count,val_accuracy"]
    for arm, points in AL_CURVE.items():
        for r, (count, acc) in enumerate(points):
            lines.append(f"{arm},{r},{count},{acc}")
            save_array(run.al / arm / f"val_logits_round{r}.npy", _logits(labels, acc, 300 + r))
    run.al_curve.write_text("\n".join(lines) + "\n")
    write_report(run.root)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    from raydistill.platform.config import config_from_dict, dump_config
    from raydistill.platform.export import Provenance, write_provenance
    from raydistill.platform.rundir import RunDir
    from raydistill.platform.text import build_tokenizer

    root = tmp_path_factory.mktemp("serve") / "tiny-run"
    root.mkdir()
    _write_data(root / "data")
    cfg = config_from_dict({
        "name": "tiny",
        "data": {"source": "file", "path": str(root / "data")},
        "tokenizer": {"vocab_size": 120, "max_length": 32},
        "teacher": {"num_layers": 4, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64},
        "student": {"num_layers": 2, "epochs": EPOCHS},
        "al": {"initial_labeled": 4, "query_size": 2, "rounds": 1},
        "sweep": {"strategies": ["uniform", "top", "bottom"], "temperatures": [1.0, 2.0], "seeds": [0, 1]},
        # a free port: the bench starts Serve itself when it is not running
        "serve": {"port": free_port(), "max_batch_size": 8, "batch_wait_timeout_s": 0.02,
                  "cpus_per_replica": 0.2, "max_texts_per_request": 16, "max_chars_per_text": 500,
                  "max_body_bytes": 4096, "request_timeout_s": 20},
        "bench": {"batch_sizes": [1, 8], "concurrency": [1, 8], "requests_per_level": 16,
                  "seconds_per_level": 2.0},
    })
    (root / "config.yaml").write_text(dump_config(cfg), encoding="utf-8")
    tokenizer = build_tokenizer(cfg.tokenizer, POSITIVE + NEGATIVE)
    for name, layers, seed in (("teacher", 4, 0), ("student", 2, 1)):
        model = _bert(layers, len(tokenizer), seed)
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    (root / "labels").mkdir()
    run = RunDir(root)
    run.label_names.write_text(json.dumps(LABEL_NAMES))
    write_provenance(run.teacher, Provenance(role="teacher", num_layers=4, teacher_num_layers=4, exported="the teacher",
                                             validation={"accuracy": 0.875}, test={"accuracy": 0.8125}))
    write_provenance(run.student, Provenance(
        role="student", num_layers=2, teacher_num_layers=4, strategy="uniform", teacher_layers=TEACHER_LAYERS,
        temperature=2.0, alpha=0.5, lr=0.003, seed=0, seeds=[0, 1],
        exported="the seed with the best validation accuracy in the winning cell",
        validation={"accuracy": 0.8125}, test={"accuracy": 0.75}, cell_validation_accuracy=0.8125))
    _write_study(root)
    return root


@pytest.fixture(scope="session")
def get_free_port():
    """A function returning a free loopback port (for Serve's HTTP proxy)."""
    return free_port


@dataclass(frozen=True)
class Served:
    """The run's app deployed once for the tests of this package (student + teacher + gateway)."""

    url: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


API_TOKEN = "s3cret-token"


@pytest.fixture(scope="package")
def served(ray_cluster, tiny_run) -> Served:
    """Deployed once for tests/serve (package scope: shut down before other test folders run,
    so its CPUs are free for them); token-protected, so every test exercises the token."""
    from raydistill.serve.app import deploy, shutdown

    url = deploy(tiny_run, port=free_port(), token=API_TOKEN)
    try:
        yield Served(url, API_TOKEN)
    finally:
        shutdown()


def no_sweep_copy(tiny_run: Path, dest: Path) -> Path:
    """The tiny run as after its teacher stage: no Tune experiment, no report, no plots."""
    shutil.copytree(tiny_run, dest, ignore=shutil.ignore_patterns(
        "tune", "plots", "report.md", "results.csv", "summary.csv", "bench.*"))
    return dest


@contextmanager
def lone_gateway(served: Served, name: str, run_dir: Path) -> Iterator[str]:
    """A Gateway without models on ``run_dir``, beside the package's app at ``/<name>`` (same
    token); yields its URL and deletes it afterwards."""
    from ray import serve

    from raydistill.serve.gateway import Gateway

    quick = {"ray_actor_options": {"num_cpus": 0.05}, "graceful_shutdown_timeout_s": 0.5,
             "graceful_shutdown_wait_loop_s": 0.1}
    serve.run(Gateway.options(**quick).bind({}, {}, served.token, str(run_dir)), name=name, route_prefix=f"/{name}")
    try:
        yield f"{served.url}/{name}"
    finally:
        serve.delete(name)
