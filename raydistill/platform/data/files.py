"""The ``file`` source: CSV / JSONL / Parquet, one file (split here) or a directory of
``train.*``, ``validation.*``, ``test.*``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from raydistill.platform.config import DataConfig
from raydistill.platform.data.common import _cfg_columns, _columns, _Loaded
from raydistill.platform.data.dataset import _PAIR, _TEXT, SPLITS
from raydistill.platform.errors import DataError

_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zip", ".zst")


def file_format(path: Path) -> str | None:
    """csv, jsonl or parquet by the file's suffix (compressed ones too), else None."""
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
        if p.is_file() and stem in SPLITS and file_format(p):
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
    fmt = file_format(path)
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
