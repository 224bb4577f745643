"""The path every source shares after reading: columns picked, labels encoded, missing splits
carved out with a seed, the caps applied, every split checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raydistill.platform.config import DataConfig
from raydistill.platform.data.dataset import (
    _GROUP,
    _LABEL,
    _PAIR,
    _SEEN,
    _TEXT,
    SPLITS,
    Split,
)
from raydistill.platform.errors import DataError


@dataclass
class _Loaded:
    """What a source read: per split a frame with columns text, [text_pair], label (raw values),
    where it came from (for messages), and label names if the source knows them."""

    frames: dict[str, pd.DataFrame]
    origins: dict[str, str]
    label_names: list[str] | None = None  # when given, integer labels are indices into it
    has_pairs: bool = False
    group_unit: str | None = None  # what a cluster is, when frames have a group column


def _columns(df: pd.DataFrame, cfg_cols: dict[str, str | None], origin: str) -> pd.DataFrame:
    """Pick and rename the configured columns; reject missing columns and empty texts."""
    if df.empty:
        raise DataError(f"{origin}: has no rows")
    wanted = {ours: theirs for ours, theirs in cfg_cols.items() if theirs is not None}
    _require_columns(list(df.columns), list(wanted.values()), origin)
    out = pd.DataFrame({ours: df[theirs].to_numpy() for ours, theirs in wanted.items()})
    for ours in (_TEXT, _PAIR):
        if ours not in out:
            continue
        col = out[ours]
        empty = col.isna() | col.astype(str).str.strip().eq("")
        if empty.any():
            rows = (np.flatnonzero(empty.to_numpy()) + 1).tolist()
            raise DataError(
                f"{origin}: column {wanted[ours]!r} has {len(rows)} empty text(s), "
                f"rows {_few(rows)} (data rows counted from 1)"
            )
        out[ours] = col.astype(str)
    return out


def _require_columns(present: list[Any], wanted: list[str], origin: str) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise DataError(
            f"{origin}: no column {missing[0]!r}; columns present: {[str(c) for c in present]}"
        )


def _encode_labels(loaded: _Loaded) -> tuple[list[str], dict[str, Split]]:
    """Map raw labels to 0..k-1 over all splits at once, so every split uses one mapping."""
    for name, df in loaded.frames.items():
        nan = df[_LABEL].isna().to_numpy()
        if nan.any():
            rows = (np.flatnonzero(nan) + 1).tolist()
            raise DataError(f"{loaded.origins[name]}: missing labels in rows {_few(rows)}")
    raw = {name: df[_LABEL].to_numpy() for name, df in loaded.frames.items()}
    integral = all(_is_integral(v) for v in raw.values())
    names = loaded.label_names
    if integral and names is not None:
        keys = list(range(len(names)))
        raw = {name: v.astype(np.int64) for name, v in raw.items()}
    elif integral:
        keys = sorted({int(x) for v in raw.values() for x in v})
        names = [str(k) for k in keys]
        raw = {name: v.astype(np.int64) for name, v in raw.items()}
    else:
        raw = {name: v.astype(str) for name, v in raw.items()}
        keys = list(names) if names is not None else sorted({x for v in raw.values() for x in v})
        names = [str(k) for k in keys]
    index = {k: i for i, k in enumerate(keys)}
    groups = _encode_groups(loaded)
    splits = {}
    for name, values in raw.items():
        bad = sorted({x for x in values.tolist() if x not in index}, key=str)
        if bad:
            raise DataError(
                f"{loaded.origins[name]}: labels {bad[:10]} are outside the label set {keys}"
                + (f" (label_names {names})" if keys != names else "")
            )
        df = loaded.frames[name]
        pairs = df[_PAIR].tolist() if loaded.has_pairs else None
        labels = np.fromiter((index[x] for x in values.tolist()), np.int64, len(values))
        seen = df[_SEEN].to_numpy(bool) if _SEEN in df else None
        splits[name] = Split(df[_TEXT].tolist(), labels, pairs, groups.get(name), seen)
    return names, splits


def _encode_groups(loaded: _Loaded) -> dict[str, np.ndarray]:
    """Cluster ids 0..G-1 over all splits at once (one id per distinct group value)."""
    if loaded.group_unit is None:
        return {}
    for name, df in loaded.frames.items():
        if df[_GROUP].isna().any():
            rows = (np.flatnonzero(df[_GROUP].isna().to_numpy()) + 1).tolist()
            raise DataError(f"{loaded.origins[name]}: empty {loaded.group_unit!r} in rows {_few(rows)}")
    values = {name: df[_GROUP].astype(str).to_numpy() for name, df in loaded.frames.items()}
    ids = np.unique(np.concatenate(list(values.values())), return_inverse=True)[1].reshape(-1)
    bounds = np.cumsum([len(v) for v in values.values()])[:-1]
    return dict(zip(values, np.split(ids.astype(np.int64), bounds), strict=True))


def _is_integral(values: np.ndarray) -> bool:
    if values.dtype.kind in "iu":
        return True
    if values.dtype.kind == "f":
        return bool(np.all(np.mod(values, 1) == 0))
    return False


def _fill_missing(
    splits: dict[str, Split], origins: dict[str, str], cfg: DataConfig
) -> tuple[dict[str, Split], dict[str, str]]:
    """Carve what a source lacks out of train (seeded, stratified by label):
    no validation and no test -> both (fractions of all rows); no validation -> validation
    (a fraction of train); no test -> validation becomes test and validation is carved."""
    splits, origins = dict(splits), dict(origins)
    if "train" not in splits:
        raise DataError(f"{next(iter(origins.values()))}: no train split (found {sorted(splits)})")
    if "validation" in splits and "test" not in splits:
        splits["test"], origins["test"] = splits.pop("validation"), origins.pop("validation")
    train = splits["train"]
    if "test" not in splits:
        fractions = [
            1 - cfg.validation_fraction - cfg.test_fraction,
            cfg.validation_fraction,
            cfg.test_fraction,
        ]
        parts = _carve(train, fractions, cfg.split_seed)
        splits["test"], origins["test"] = train.subset(parts[2]), origins["train"]
    elif "validation" not in splits:
        parts = _carve(train, [1 - cfg.validation_fraction, cfg.validation_fraction], cfg.split_seed)
    else:
        return splits, origins
    splits["train"], splits["validation"] = train.subset(parts[0]), train.subset(parts[1])
    origins["validation"] = origins["train"]
    return splits, origins


def _carve(split: Split, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Index arrays of the parts: whole clusters when the rows have them, else rows by label."""
    if split.groups is None:
        return _stratified_split(split.labels, fractions, seed)
    part = _grouped_split(split.labels, split.groups, fractions, seed)
    return [np.flatnonzero(part == i) for i in range(len(fractions))]


def _stratified_split(
    labels: np.ndarray, fractions: Sequence[float], seed: int
) -> list[np.ndarray]:
    """Index arrays (sorted) for parts of the given fractions, per class. Parts after the first
    get at least one example of each class that has enough, so tiny files still evaluate."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        sizes = [int(f * len(idx) + 0.5) for f in fractions[1:]]  # half up, not to even
        if len(idx) >= len(fractions):
            sizes = [max(s, 1) for s in sizes]
        bounds = np.cumsum([len(idx) - sum(sizes), *sizes])[:-1]
        for part, chunk in zip(parts, np.split(idx, bounds), strict=True):
            part.append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def _cap(splits: dict[str, Split], cfg: DataConfig) -> dict[str, Split]:
    """Seeded subsets: ``max_train`` for the pool, ``max_eval`` for validation and test."""
    caps = {"train": cfg.max_train, "validation": cfg.max_eval, "test": cfg.max_eval}
    out = {}
    for i, name in enumerate(SPLITS):
        split, cap = splits[name], caps[name]
        if cap is not None and len(split) > cap:
            rng = np.random.default_rng([cfg.split_seed, i])
            split = split.subset(np.sort(rng.choice(len(split), cap, replace=False)))
        out[name] = split
    return out


def _check_split(split: Split, name: str, origin: str, names: list[str]) -> None:
    if len(split) == 0:
        raise DataError(f"{origin}: the {name} split is empty (too few rows to split)")
    present = np.unique(split.labels)
    if len(present) < 2:
        raise DataError(
            f"{origin}: the {name} split ({len(split)} rows) has only one class "
            f"({names[present[0]]!r}); a classifier needs at least two"
        )


def _few(rows: list[Any], k: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:k])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > k else "")


def _cfg_columns(cfg: DataConfig, text: str | None = None, pair: str | None = None) -> dict:
    """The configured column names; a preset's text / pair columns fill in those not set."""
    set_ = cfg.model_fields_set
    return {
        _TEXT: cfg.text_column if text is None or "text_column" in set_ else text,
        _PAIR: cfg.text_pair_column if pair is None or "text_pair_column" in set_ else pair,
        _LABEL: cfg.label_column,
        _GROUP: cfg.group_column,
    }


def _grouped_split(
    labels: np.ndarray, groups: np.ndarray, fractions: Sequence[float], seed: int
) -> np.ndarray:
    """Assign whole groups to parts (a part index per row), stratified as far as groups allow:
    groups in a seeded order each go to the part whose per-class counts, weighted by the
    group's own class mix, would be least full relative to that part's target."""
    n_groups, n_classes = groups.max() + 1, labels.max() + 1
    counts = np.zeros((n_groups, n_classes))
    np.add.at(counts, (groups, labels), 1)
    target = np.maximum(np.outer(fractions, counts.sum(0)), 1.0)  # (parts, classes)
    filled = np.zeros_like(target)
    part_of = np.empty(n_groups, dtype=np.int64)
    for g in np.random.default_rng(seed).permutation(n_groups):
        mix = counts[g] / counts[g].sum()
        part = int(np.argmin(((filled + counts[g]) / target) @ mix))
        filled[part] += counts[g]
        part_of[g] = part
    return part_of[groups]
