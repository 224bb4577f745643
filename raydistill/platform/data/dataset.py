"""One dataset in three fixed splits: raw texts, int64 labels, and optionally text pairs,
clusters (what the bootstrap resamples) and which test rows an earlier choice saw."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from raydistill.platform.errors import DataError

SPLITS = ("train", "validation", "test")
_TEXT, _PAIR, _LABEL, _GROUP, _SEEN = "text", "text_pair", "label", "group", "seen"


@dataclass(frozen=True)
class Split:
    """One split: texts, optional second sentences (NLI), int64 labels, all of length n."""

    texts: list[str]
    labels: np.ndarray
    text_pairs: list[str] | None = None
    # The cluster of each row (a film for the embedded data, ``data.group_column`` for a file):
    # rows of one cluster are not independent, so the report resamples clusters.
    groups: np.ndarray | None = None
    # Rows that an earlier choice saw (``data.earlier_validation_fraction``): they leave the
    # confirmation set.
    seen: np.ndarray | None = None

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels).astype(np.int64, copy=False)
        object.__setattr__(self, "labels", labels)
        n = len(self.texts)
        if labels.shape != (n,):
            raise ValueError(f"labels have shape {labels.shape}, texts have {n} entries")
        if self.text_pairs is not None and len(self.text_pairs) != n:
            raise ValueError(f"text_pairs has {len(self.text_pairs)} entries, texts has {n}")
        for name in ("groups", "seen"):
            value = getattr(self, name)
            if value is not None and np.shape(value) != (n,):
                raise ValueError(f"{name} has shape {np.shape(value)}, texts have {n} entries")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Split:
        """The rows at ``indices``, in that order (the active learner's labelled set, a cap)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        pairs = None if self.text_pairs is None else [self.text_pairs[i] for i in idx]
        groups = None if self.groups is None else self.groups[idx]
        seen = None if self.seen is None else self.seen[idx]
        return Split([self.texts[i] for i in idx], self.labels[idx], pairs, groups, seen)


@dataclass(frozen=True)
class TextDataset:
    """The three splits and the label names (label i is ``label_names[i]``)."""

    train: Split
    validation: Split
    test: Split
    label_names: list[str]
    group_unit: str | None = None  # what a row's cluster is ("film"), None: rows are independent

    def __post_init__(self) -> None:
        k = len(self.label_names)
        for name in SPLITS:
            labels = self.split(name).labels
            if len(labels) and (labels.min() < 0 or labels.max() >= k):
                raise DataError(
                    f"{name} split has labels outside 0..{k - 1} (label_names {self.label_names})"
                )

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
        return getattr(self, name)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def fingerprint(self) -> str:
        """sha256 of the content, recorded in meta.json so a run can tell its data changed."""
        h = hashlib.sha256(json.dumps(self.label_names).encode())
        for name in SPLITS:
            s = self.split(name)
            row = [name, s.texts, s.text_pairs, s.labels.tolist()]
            h.update(json.dumps(row, ensure_ascii=False).encode())
        return h.hexdigest()


