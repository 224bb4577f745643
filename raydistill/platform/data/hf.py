"""The ``hf`` source: a Hugging Face ``datasets`` dataset by name (with presets) or one saved with
``DatasetDict.save_to_disk``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from raydistill.platform.config import DataConfig
from raydistill.platform.data.common import (
    _cfg_columns,
    _columns,
    _Loaded,
    _require_columns,
)
from raydistill.platform.data.dataset import _PAIR, SPLITS
from raydistill.platform.errors import DataError


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


