"""Teacher construction, safetensors checkpoints and batched inference."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from transformers import BertForSequenceClassification, BertTokenizerFast

from raydistill.platform.config import TeacherConfig
from raydistill.platform.errors import CheckpointError, DataError
from raydistill.platform.models import (
    autocast_context,
    build_teacher,
    count_parameters,
    load_classifier,
    predict_logits,
    save_classifier,
    set_seed,
)

pytestmark = pytest.mark.unit

CFG = TeacherConfig(num_layers=2, hidden_size=16, num_heads=2, intermediate_size=32, dropout=0.2)


@pytest.fixture()
def model() -> BertForSequenceClassification:
    return build_teacher(CFG, num_labels=3, vocab_size=50, max_length=12, pad_token_id=0, seed=1)


def _input_ids(n: int = 10) -> torch.Tensor:
    return torch.randint(1, 50, (n, 12), generator=torch.Generator().manual_seed(0))


def _batches(n: int = 10, batch_size: int = 4, shuffle_seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Batches of a dataset of n examples, visited in a shuffled order (as a sampler would)."""
    ids = _input_ids(n)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(shuffle_seed))
    return [
        {
            "input_ids": ids[chunk],
            "attention_mask": torch.ones(len(chunk), 12, dtype=torch.long),
            "token_type_ids": torch.zeros(len(chunk), 12, dtype=torch.long),
            "labels": chunk % 3,
            "index": chunk,
        }
        for chunk in order.split(batch_size)
    ]


def _full_logits(model: torch.nn.Module) -> torch.Tensor:
    """Logits of the whole dataset in one forward pass, in index order."""
    model.eval()
    with torch.no_grad():
        return model(input_ids=_input_ids()).logits


def test_build_teacher_follows_config(model):
    assert isinstance(model, BertForSequenceClassification)
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size) == (2, 16, 2, 32)
    assert (c.num_labels, c.vocab_size, c.max_position_embeddings, c.type_vocab_size) == (3, 50, 12, 2)
    assert c.hidden_dropout_prob == c.attention_probs_dropout_prob == 0.2


def test_build_teacher_seeded(model):
    again = build_teacher(CFG, num_labels=3, vocab_size=50, max_length=12, seed=1)
    other = build_teacher(CFG, num_labels=3, vocab_size=50, max_length=12, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), other.parameters()))


def test_pretrained_teacher_loads_local_dir(model, tmp_path):
    save_classifier(model, tmp_path / "m")
    cfg = TeacherConfig(pretrained=str(tmp_path / "m"))
    teacher = build_teacher(cfg, num_labels=3, vocab_size=0, max_length=0)
    assert torch.equal(teacher.classifier.weight, model.classifier.weight)


def test_save_load_round_trip_gives_identical_logits(model, tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    path = tmp_path / "out" / "student"
    save_classifier(model, path, tokenizer=tokenizer, extra={"provenance.json": {"strategy": "top"}})
    assert (path / "model.safetensors").is_file()
    assert json.loads((path / "provenance.json").read_text()) == {"strategy": "top"}
    assert BertTokenizerFast.from_pretrained(path)("good bad")["input_ids"] == [2, 5, 6, 3]
    loaded = load_classifier(path)
    assert torch.equal(_full_logits(loaded), _full_logits(model))
    assert sorted(p.name for p in path.parent.iterdir()) == ["student"]  # no temp dirs left


def test_save_replaces_existing_dir_and_unwraps_wrapper(model, tmp_path):
    path = tmp_path / "m"
    save_classifier(model, path, extra={"stale.json": 1})
    with torch.no_grad():
        model.classifier.bias.fill_(3.0)
    save_classifier(torch.nn.DataParallel(model), path)
    assert not (path / "stale.json").exists()
    assert torch.equal(load_classifier(path).classifier.bias, torch.full((3,), 3.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_save_rejects_extra_paths(model, tmp_path):
    with pytest.raises(CheckpointError, match="plain file name"):
        save_classifier(model, tmp_path / "m", extra={"../x.json": {}})
    assert list(tmp_path.iterdir()) == []


def test_load_missing_or_invalid(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_classifier(tmp_path / "nope")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="cannot load"):
        load_classifier(tmp_path)  # a config without safetensors weights


def test_predict_logits_in_index_order(model):
    expected = _full_logits(model)
    model.train()
    got = predict_logits(model, _batches(shuffle_seed=3), torch.device("cpu"))
    assert got.dtype == torch.float32 and got.shape == (10, 3)
    assert torch.allclose(got, expected, atol=1e-5)
    assert model.training  # mode restored
    assert torch.allclose(predict_logits(model, _batches(shuffle_seed=4), torch.device("cpu")), got)


def test_predict_logits_empty_loader(model):
    with pytest.raises(DataError):
        predict_logits(model, [], torch.device("cpu"))


def test_count_parameters():
    assert count_parameters(torch.nn.Linear(3, 2)) == 8


def test_set_seed_reproduces_python_numpy_torch():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    set_seed(5)
    first = draw()
    set_seed(5)
    assert draw() == first


def test_autocast_is_off_on_cpu():
    with autocast_context(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_truncated_weights_are_a_checkpoint_error(model, tmp_path):
    """A half-written model.safetensors: one clear CheckpointError naming the directory, fast."""
    save_classifier(model, tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cannot load a classifier from .*m: .*header"):
        load_classifier(tmp_path / "m")
