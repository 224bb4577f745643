"""Data preparation shared by every stage: load the dataset, train (or load) the tokenizer
once per run, tokenise every split once, and write the evaluation labels into the run dir.

The tokenizer is saved under ``<run>/tokenizer`` the first time and reloaded after, so the
teacher, every student trial and the Serve replicas see exactly the same vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from transformers import PreTrainedTokenizerFast

from raydistill.platform.config import ExperimentConfig
from raydistill.platform.data import TextDataset, load_dataset
from raydistill.platform.rundir import RunDir, atomic_write_text, save_array
from raydistill.platform.text import Encoded, build_tokenizer, encode, load_tokenizer

EVAL_SPLITS = ("validation", "test")


@dataclass(frozen=True)
class PreparedData:
    """A dataset with its tokenizer and every split tokenised once."""

    dataset: TextDataset
    tokenizer: PreTrainedTokenizerFast
    encoded: dict[str, Encoded]

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)


def prepare_data(cfg: ExperimentConfig, run: RunDir) -> PreparedData:
    """Load, tokenise and record labels for ``cfg``'s dataset in ``run`` (idempotent)."""
    dataset = load_dataset(cfg.data)
    if (run.tokenizer / "tokenizer.json").is_file() or (run.tokenizer / "tokenizer_config.json").is_file():
        tokenizer = load_tokenizer(run.tokenizer)
    else:
        tokenizer = build_tokenizer(cfg.tokenizer, dataset.train.texts + (dataset.train.text_pairs or []))
        tokenizer.save_pretrained(str(run.tokenizer))
    encoded = {
        name: encode(tokenizer, dataset.split(name), cfg.tokenizer.max_length)
        for name in ("train", *EVAL_SPLITS)
    }
    for name in EVAL_SPLITS:
        save_array(run.eval_labels(name), encoded[name].labels)
    atomic_write_text(run.labels / "label_names.json", json.dumps(dataset.label_names))
    return PreparedData(dataset=dataset, tokenizer=tokenizer, encoded=encoded)


def transfer_indices(pool_size: int, transfer_size: int | None, seed: int) -> np.ndarray:
    """The transfer set (the pool examples students distil on): a seeded random subset of the
    pool, sorted, the same for every trial and for the teacher's logit cache; or the whole
    pool. CE applies only to its labelled members, KL to all of them."""
    if transfer_size is None or transfer_size >= pool_size:
        return np.arange(pool_size)
    return np.sort(np.random.default_rng(seed).choice(pool_size, transfer_size, replace=False))
