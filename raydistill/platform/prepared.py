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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transformers import PreTrainedTokenizerFast

from raydistill.platform.config import ExperimentConfig
from raydistill.platform.data import TextDataset, load_dataset
from raydistill.platform.rundir import RunDir, atomic_write_text, save_array, save_arrays
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
    if (run.tokenizer / "tokenizer.json").is_file() or (run.tokenizer / "tokenizer_config.json").is_file():
        tokenizer = load_tokenizer(run.tokenizer)
    else:
        tokenizer = build_tokenizer(cfg.tokenizer, dataset.train.texts + (dataset.train.text_pairs or []))
        tokenizer.save_pretrained(str(run.tokenizer))
    key = hashlib.sha256("|".join([
        dataset.fingerprint(), tokenizer.backend_tokenizer.to_str(), str(cfg.tokenizer.max_length),
    ]).encode()).hexdigest()[:16]
    encoded, files = {}, {}
    for name in ("train", *EVAL_SPLITS):
        path = files[name] = run.cache / f"{name}-{key}.npz"
        if path.is_file():
            encoded[name] = load_encoded(path)
        else:
            encoded[name] = encode(tokenizer, dataset.split(name), cfg.tokenizer.max_length)
            save_encoded(path, encoded[name])
    for name in EVAL_SPLITS:
        save_array(run.eval_labels(name), encoded[name].labels)
    atomic_write_text(run.labels / "label_names.json", json.dumps(dataset.label_names))
    return PreparedData(dataset=dataset, tokenizer=tokenizer, encoded=encoded, files=files)


def save_encoded(path: Path, encoded: Encoded) -> None:
    """A tokenised split as flat arrays plus row offsets (``.npz``, atomic, never pickled)."""
    offsets = np.concatenate([[0], np.cumsum(encoded.lengths)]).astype(np.int64)

    def flat(rows: list[list[int]]) -> np.ndarray:
        return np.fromiter((t for row in rows for t in row), dtype=np.int32, count=int(offsets[-1]))

    save_arrays(path, input_ids=flat(encoded.input_ids), token_type_ids=flat(encoded.token_type_ids),
                offsets=offsets, labels=np.asarray(encoded.labels))


def load_encoded(path: Path) -> Encoded:
    """What :func:`save_encoded` wrote."""
    with np.load(path, allow_pickle=False) as z:
        offsets, ids, types = z["offsets"], z["input_ids"].tolist(), z["token_type_ids"].tolist()
        rows = list(zip(offsets[:-1].tolist(), offsets[1:].tolist()))
        return Encoded([ids[a:b] for a, b in rows], [types[a:b] for a, b in rows], z["labels"])


def transfer_indices(pool_size: int, transfer_size: int | None, seed: int) -> np.ndarray:
    """The transfer set (the pool examples students distil on): a seeded random subset of the
    pool, sorted, the same for every trial and for the teacher's logit cache; or the whole
    pool. CE applies only to its labelled members, KL to all of them."""
    if transfer_size is None or transfer_size >= pool_size:
        return np.arange(pool_size)
    return np.sort(np.random.default_rng(seed).choice(pool_size, transfer_size, replace=False))
