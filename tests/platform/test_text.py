"""Tokenizer and batching: a trained WordPiece tokenizer survives save/load, pairs get segment
ids, padding is per batch, and the bucketed sampler covers every index on every rank."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raydistill.platform.config import DataConfig, TokenizerConfig
from raydistill.platform.data import Split, load_dataset
from raydistill.platform.prepared import load_encoded, save_encoded
from raydistill.platform.errors import CheckpointError, DataError
from raydistill.platform.text import (
    BATCH_KEYS,
    SPECIAL_TOKENS,
    Encoded,
    EncodedDataset,
    LengthBucketSampler,
    build_tokenizer,
    collate,
    encode,
    encode_texts,
    load_tokenizer,
    make_loader,
)

pytestmark = pytest.mark.unit

WORDS = "the film is a quiet slow funny dull bright moving story about love war and a dog".split()
CORPUS = [" ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 4 + i % 9)) for i in range(300)]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TokenizerConfig(vocab_size=150, max_length=16), CORPUS)


def _ids(tok, texts, pairs=None):
    enc = tok(texts, pairs, return_token_type_ids=True)
    return enc["input_ids"], enc["token_type_ids"]


# ---------------------------------------------------------------- tokenizer


def test_trained_tokenizer_layout(tokenizer):
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tokenizer.pad_token_id == 0 and tokenizer.model_max_length == 16
    ids, types = _ids(tokenizer, ["The film is FUNNY"])
    assert ids[0][0] == tokenizer.cls_token_id and ids[0][-1] == tokenizer.sep_token_id
    assert tokenizer.convert_ids_to_tokens(ids[0][1:-1]) == ["the", "film", "is", "funny"]
    assert types == [[0] * 6]


def test_vocabulary_is_numbered_in_sorted_order(tokenizer):
    # Specials first, then sorted: equal vocabularies must give identical files.
    vocab = tokenizer.get_vocab()
    by_id = sorted(vocab, key=vocab.__getitem__)
    assert by_id[:5] == SPECIAL_TOKENS and by_id[5:] == sorted(by_id[5:])
    assert sorted(vocab.values()) == list(range(len(vocab)))


# Each process trains twice (two trainer instances) and prints the sha256 of each saved
# tokenizer.json. Hash-map order differs between trainer instances and processes.
_TRAIN_AND_HASH = """
import hashlib, json, sys, tempfile
from pathlib import Path
from raydistill.platform.config import TokenizerConfig
from raydistill.platform.text import build_tokenizer
texts = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
for _ in range(2):
    with tempfile.TemporaryDirectory() as out:
        build_tokenizer(TokenizerConfig(vocab_size=2000), texts).save_pretrained(out)
        print(hashlib.sha256((Path(out) / "tokenizer.json").read_bytes()).hexdigest())
"""


def test_training_is_deterministic_across_processes(tmp_path):
    """The same texts give a byte-identical tokenizer.json in every process. Before the fix
    2000 embedded texts at 2000 tokens gave 4 different files in 8 trainings."""
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(load_dataset(DataConfig()).train.texts[:2000]), encoding="utf-8")
    procs = [
        subprocess.Popen([sys.executable, "-c", _TRAIN_AND_HASH, str(texts)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
        for _ in range(3)
    ]
    hashes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        hashes += out.split()
    assert len(hashes) == 6 and len(set(hashes)) == 1, hashes


def test_pairs_get_segment_ids(tokenizer):
    ids, types = _ids(tokenizer, ["a quiet film"], ["a dull story"])
    sep = tokenizer.sep_token_id
    first_sep = ids[0].index(sep)
    assert ids[0][0] == tokenizer.cls_token_id and ids[0][-1] == sep
    assert types[0] == [0] * (first_sep + 1) + [1] * (len(ids[0]) - first_sep - 1)
    assert 1 in types[0]


def test_lowercase_setting():
    cased = build_tokenizer(TokenizerConfig(vocab_size=150, lowercase=False), [*CORPUS, "Film"])
    assert cased("Film")["input_ids"] != cased("film")["input_ids"]
    lower = build_tokenizer(TokenizerConfig(vocab_size=150), CORPUS)
    assert lower("FILM")["input_ids"] == lower("film")["input_ids"]


def test_round_trip_through_save_pretrained(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    texts, pairs = [*CORPUS[:20], "an unseen word: zyzzyva!"], CORPUS[20:41]
    assert _ids(loaded, texts) == _ids(tokenizer, texts)
    assert _ids(loaded, texts, pairs) == _ids(tokenizer, texts, pairs)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded.pad_token_id == 0 and loaded.model_max_length == 16
    assert "token_type_ids" in loaded.model_input_names
    # A config naming the directory as `pretrained` loads it instead of training.
    again = build_tokenizer(TokenizerConfig(pretrained=str(tmp_path / "tok")), [])
    assert again.get_vocab() == tokenizer.get_vocab()


def test_tokenizer_errors(tmp_path):
    with pytest.raises(CheckpointError, match="tokenizer directory not found"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="cannot load a tokenizer from"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(DataError, match="no texts"):
        build_tokenizer(TokenizerConfig(), [])


# ---------------------------------------------------------------- encoding


def test_encode_truncates_without_padding(tokenizer):
    split = Split(["a dog", CORPUS[8] * 5, "love"], np.array([1, 0, 1]))
    enc = encode(tokenizer, split, max_length=10)
    assert len(enc) == 3 and enc.lengths.tolist() == [4, 10, 3]
    assert enc.row(1)[0][-1] == tokenizer.sep_token_id  # truncation keeps the [SEP]
    assert enc.labels.tolist() == [1, 0, 1]
    assert enc.row(0)[1].tolist() == [0, 0, 0, 0]


def test_encode_pairs(tokenizer):
    split = Split(["a dog", "love"], np.array([0, 2]), ["war", "a quiet story"])
    enc = encode(tokenizer, split, max_length=32)
    assert enc.row(0)[1].tolist() == [0, 0, 0, 0, 1, 1]
    assert enc.row(0)[0].tolist() == _ids(tokenizer, ["a dog"], ["war"])[0][0]


def test_encoded_dataset_items():
    enc = Encoded.from_rows([[2, 5, 3], [2, 3]], [[0, 0, 0], [0, 0]], np.array([1, 0]))
    item = EncodedDataset(enc)[1]
    assert {k: np.asarray(v).tolist() for k, v in item.items()} == {
        "input_ids": [2, 3], "token_type_ids": [0, 0], "label": 0, "index": 1}


def test_encoded_subset_concat_and_mmap_round_trip(tmp_path):
    """Flat rows: a subset, a concatenation and a memory-mapped reload give back exactly the rows
    they were made from, in the order asked (repeats and empty rows included)."""
    rng = np.random.default_rng(0)
    rows = [rng.integers(0, 50, size=rng.integers(0, 9)).tolist() for _ in range(30)]
    types = [[i % 2] * len(row) for i, row in enumerate(rows)]
    enc = Encoded.from_rows(rows, types, np.arange(30))
    order = [29, 3, 3, 0, 17]
    sub = enc.subset(order)
    assert [sub.row(i)[0].tolist() for i in range(len(order))] == [rows[i] for i in order]
    assert [sub.row(i)[1].tolist() for i in range(len(order))] == [types[i] for i in order]
    assert sub.labels.tolist() == order
    both = Encoded.concat([enc.subset(range(10)), enc.subset(range(10, 30))])
    assert np.array_equal(both.ids, enc.ids) and np.array_equal(both.offsets, enc.offsets)
    save_encoded(tmp_path / "split", enc)
    mapped = load_encoded(tmp_path / "split", mmap=True)
    assert isinstance(mapped.ids, np.memmap)
    assert [mapped.row(i)[0].tolist() for i in range(30)] == rows
    assert not isinstance(mapped.subset(order).ids, np.memmap)  # a subset is copied out
    (tmp_path / "split" / "labels.npy").unlink()
    np.save(tmp_path / "split" / "labels.npy", np.arange(29))
    with pytest.raises(CheckpointError, match="inconsistent"):
        load_encoded(tmp_path / "split")


def test_collate_pads_to_longest():
    items = [
        {"input_ids": [2, 7, 3], "token_type_ids": [0, 0, 0], "label": 1, "index": 4},
        {"input_ids": [2, 7, 3, 9, 3], "token_type_ids": [0, 0, 0, 1, 1], "label": 0, "index": 9},
    ]
    batch = collate(items, pad_token_id=5)
    assert (
        tuple(batch)
        == BATCH_KEYS
        == ("input_ids", "attention_mask", "token_type_ids", "labels", "index")
    )
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["input_ids"].tolist() == [[2, 7, 3, 5, 5], [2, 7, 3, 9, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]]
    assert batch["labels"].tolist() == [1, 0] and batch["index"].tolist() == [4, 9]


def test_encode_texts_for_serving(tokenizer):
    batch = encode_texts(tokenizer, ["a dog", "the film is a funny story"], max_length=6)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert batch["input_ids"].shape == (2, 6) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0], [1] * 6]
    pairs = encode_texts(tokenizer, ["a dog"], max_length=16, text_pairs=["war"])
    assert pairs["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1]]


# ---------------------------------------------------------------- bucketed batches


LENGTHS = np.random.default_rng(0).integers(1, 65, size=1000)


def _epoch(sampler: LengthBucketSampler) -> list[list[int]]:
    batches = list(sampler)
    assert len(batches) == len(sampler)
    return batches


def test_sampler_covers_every_index_once_per_epoch():
    sampler = LengthBucketSampler(LENGTHS, batch_size=16, seed=3)
    seen = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = _epoch(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(1000))
        assert all(len(b) <= 16 for b in batches) and len(batches) == 63
        seen.append(batches)
    assert seen[0] != seen[1]


def test_sampler_batches_are_length_homogeneous():
    batches = _epoch(LengthBucketSampler(LENGTHS, batch_size=16))
    spread = np.mean([np.ptp(LENGTHS[b]) for b in batches])
    random_spread = np.mean([np.ptp(LENGTHS[b]) for b in np.split(np.arange(992), 62)])
    assert spread < 5 < 40 < random_spread


def test_sampler_is_reproducible_by_seed():
    def order(seed):
        return _epoch(LengthBucketSampler(LENGTHS, 16, seed=seed))

    assert order(1) == order(1)
    assert order(1) != order(2)


def test_sampler_restricted_to_indices():
    chosen = np.arange(0, 1000, 7)
    batches = _epoch(LengthBucketSampler(LENGTHS, 10, indices=chosen))
    assert sorted(i for b in batches for i in b) == chosen.tolist()


@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_ranks_get_equal_batches_and_cover_all(shuffle):
    per_rank = [
        _epoch(LengthBucketSampler(LENGTHS[:100], 8, shuffle=shuffle, num_replicas=3, rank=r))
        for r in range(3)
    ]
    assert [len(b) for b in per_rank] == [5, 5, 5]  # 13 batches padded to 15
    flat = [i for batches in per_rank for b in batches for i in b]
    assert set(flat) == set(range(100))
    assert len(flat) - 100 <= 2 * 8  # only the two repeated batches overlap


def test_sampler_unshuffled_order_is_by_length_then_index():
    lengths = np.array([5, 3, 5, 1, 3, 9])
    sampler = LengthBucketSampler(lengths, batch_size=4, shuffle=False)
    first = _epoch(sampler)
    assert first == [[3, 1, 4, 0], [2, 5]]
    sampler.set_epoch(7)
    assert _epoch(sampler) == first


def test_sampler_edge_cases():
    assert _epoch(LengthBucketSampler(LENGTHS, 4, indices=[])) == []
    for rank in range(3):  # one batch, three ranks: each still gets a step
        sampler = LengthBucketSampler(LENGTHS, 4, indices=[5], num_replicas=3, rank=rank)
        assert _epoch(sampler) == [[5]]
    with pytest.raises(ValueError, match=r"rank 2 is outside 0\.\.1"):
        LengthBucketSampler(LENGTHS, 4, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match=r"indices must lie in 0\.\.999"):
        LengthBucketSampler(LENGTHS, 4, indices=[1000])


def test_make_loader(tokenizer):
    split = Split(CORPUS[:50], np.arange(50) % 2)
    enc = encode(tokenizer, split, max_length=16)
    loader = make_loader(enc, batch_size=8, pad_token_id=tokenizer.pad_token_id)
    seen = []
    for batch in loader:
        width = batch["input_ids"].shape[1]
        lengths = batch["attention_mask"].sum(1)
        assert lengths.max() == width
        assert lengths.tolist() == enc.lengths[batch["index"]].tolist()
        assert batch["labels"].tolist() == (batch["index"] % 2).tolist()
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(50))
    shuffled = make_loader(enc, 8, indices=range(10, 30), shuffle=True, seed=1)
    shuffled.batch_sampler.set_epoch(2)
    assert sorted(i for b in shuffled for i in b["index"].tolist()) == list(range(10, 30))
