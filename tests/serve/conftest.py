"""A tiny run directory for the Serve tests: config, a 4-layer teacher and a 2-layer student
(hidden 32) with a WordPiece tokenizer trained on a few sentences, and student provenance.

Built once per session in seconds; nothing is downloaded. ``served`` deploys it once for the
whole package (``__init__.py`` makes tests/serve a package, so the fixture's package scope ends
with this folder)."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    from raydistill.platform.config import config_from_dict, dump_config
    from raydistill.platform.text import build_tokenizer

    root = tmp_path_factory.mktemp("serve") / "tiny-run"
    root.mkdir()
    _write_data(root / "data")
    cfg = config_from_dict({
        "name": "tiny",
        "data": {"source": "file", "path": str(root / "data")},
        "tokenizer": {"vocab_size": 120, "max_length": 32},
        "teacher": {"num_layers": 4, "hidden_size": 32, "num_heads": 2, "intermediate_size": 64},
        "student": {"num_layers": 2},
        "al": {"initial_labeled": 4, "query_size": 2, "rounds": 1},
        "sweep": {"strategies": ["uniform"], "temperatures": [2.0], "seeds": [0]},
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
    (root / "labels" / "label_names.json").write_text(json.dumps(LABEL_NAMES))
    (root / "teacher" / "eval.json").write_text(
        json.dumps({"validation_accuracy": 0.875, "test_accuracy": 0.8125})
    )
    (root / "student" / "provenance.json").write_text(json.dumps({
        "strategy": "uniform", "teacher_layers": TEACHER_LAYERS, "teacher_num_layers": 4,
        "student_num_layers": 2, "temperature": 2.0, "alpha": 0.5, "seed": 0, "seeds": [0],
        "metrics": {"val_accuracy_mean": 0.8, "val_accuracy": 0.8125, "test_accuracy": 0.75},
    }))
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
