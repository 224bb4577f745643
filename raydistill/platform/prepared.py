"""Data preparation shared by every stage: load the dataset, train (or load) the tokenizer
once per run, tokenise every split once, and write the evaluation labels into the run dir.

The tokenizer is saved under ``<run>/tokenizer`` the first time and reloaded after, so the
teacher, every student trial and the Serve replicas see exactly the same vocabulary. The
tokenised splits are cached under ``<run>/cache``, keyed by the data's and the tokenizer's
content hashes and the max length: a resumed run, a sweep or a bench reads them instead of
tokenising again, and a changed input misses the cache instead of reading stale ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from transformers import PreTrainedTokenizerFast

from raydistill.platform.config import ExperimentConfig
from raydistill.platform.data import TextDataset, load_dataset
from raydistill.platform.errors import CheckpointError
from raydistill.platform.rundir import RunDir, array_file, atomic_write_text, has_tokenizer, save_array, save_array_dir
from raydistill.platform.text import Encoded, build_tokenizer, encode, load_tokenizer

EVAL_SPLITS = ("validation", "test")


@dataclass(frozen=True)
class PreparedData:
    """A dataset with its tokenizer and every split tokenised once (``files``: where each
    tokenised split is cached, for processes that load it themselves)."""

    dataset: TextDataset
    tokenizer: PreTrainedTokenizerFast
    encoded: dict[str, Encoded]
    files: dict[str, Path]

    @property
    def pad_token_id(self) -> int:
        return int(self.tokenizer.pad_token_id or 0)


def prepare_data(cfg: ExperimentConfig, run: RunDir) -> PreparedData:
    """Load, tokenise and record labels for ``cfg``'s dataset in ``run`` (idempotent)."""
    dataset = load_dataset(cfg.data)
    if has_tokenizer(run.tokenizer):
        tokenizer = load_tokenizer(run.tokenizer)
    else:
        tokenizer = build_tokenizer(cfg.tokenizer, dataset.train.texts + (dataset.train.text_pairs or []))
        tokenizer.save_pretrained(str(run.tokenizer))
    key = hashlib.sha256("|".join([
        dataset.fingerprint(), tokenizer.backend_tokenizer.to_str(), str(cfg.tokenizer.max_length),
    ]).encode()).hexdigest()[:16]
    encoded, files = {}, {}
    for name in ("train", *EVAL_SPLITS):
        path = files[name] = run.encoded_split(name, key)
        if not path.is_dir():
            save_encoded(path, encode(tokenizer, dataset.split(name), cfg.tokenizer.max_length))
        encoded[name] = load_encoded(path, mmap=True)
    for name in EVAL_SPLITS:
        save_array(run.eval_labels(name), encoded[name].labels)
        if dataset.split(name).groups is not None:
            save_array(run.eval_groups(name), dataset.split(name).groups)
    if dataset.group_unit is not None:
        atomic_write_text(run.clusters, json.dumps({"unit": dataset.group_unit}))
    seen = dataset.test.seen
    save_array(run.confirmation_mask, np.ones(len(dataset.test), bool) if seen is None else ~seen)
    atomic_write_text(run.label_names, json.dumps(dataset.label_names))
    return PreparedData(dataset=dataset, tokenizer=tokenizer, encoded=encoded, files=files)


_ENCODED_FIELDS = tuple(field.name for field in fields(Encoded))


def save_encoded(path: Path, encoded: Encoded) -> None:
    """A tokenised split as a directory of flat ``.npy`` arrays (atomic, never pickled)."""
    save_array_dir(path, **{name: getattr(encoded, name) for name in _ENCODED_FIELDS})


def load_encoded(path: Path, mmap: bool = False) -> Encoded:
    """What :func:`save_encoded` wrote. ``mmap``: the arrays stay on disk and a reader pages in
    only the rows it touches (pool scoring and the teacher's workers read a pool this way, so
    its size never shows in their memory); a subset copies its rows out."""
    mode = "r" if mmap else None
    arrays = {name: np.load(array_file(path, name), mmap_mode=mode, allow_pickle=False) for name in _ENCODED_FIELDS}
    encoded = Encoded(**arrays)
    if encoded.offsets[-1] != len(encoded.ids) or len(encoded.labels) != len(encoded):
        raise CheckpointError(f"tokenised split {path} is inconsistent (offsets, ids and labels disagree)")
    return encoded


def transfer_indices(pool_size: int, transfer_size: int | None, seed: int) -> np.ndarray:
    """The transfer set (the pool examples students distil on): a seeded random subset of the
    pool, sorted, the same for every trial and for the teacher's logit cache; or the whole
    pool. CE applies only to its labelled members, KL to all of them."""
    if transfer_size is None or transfer_size >= pool_size:
        return np.arange(pool_size)
    return np.sort(np.random.default_rng(seed).choice(pool_size, transfer_size, replace=False))
