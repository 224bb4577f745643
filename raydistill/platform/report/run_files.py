"""The run's own files the report reads besides Tune's: its config, arrays, JSON and the models'
safetensors headers. Each is optional: a missing file gives None, so the report says what is
missing instead of failing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from raydistill.platform.errors import CheckpointError
from raydistill.platform.rundir import CONFIG, MODEL_WEIGHTS_GLOB


def read_run_config(root: Path | None) -> dict[str, Any]:
    if root is None or not (root / CONFIG).is_file():
        return {}
    try:
        tree = yaml.safe_load((root / CONFIG).read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return tree if isinstance(tree, dict) else {}




def optional_array(path: Path) -> np.ndarray | None:
    """A ``.npy`` file (never unpickled), or None when there is none."""
    return np.load(path, allow_pickle=False) if path.is_file() else None


def optional_logits(path: Path, n_labels: int, labels_path: Path) -> np.ndarray | None:
    """Logits [N, C] for ``n_labels`` examples, or None without the file. Raises
    CheckpointError naming both files when the shapes disagree."""
    logits = optional_array(path)
    if logits is not None and (logits.ndim != 2 or len(logits) != n_labels):
        raise CheckpointError(f"{path} has shape {logits.shape}, but {labels_path} holds "
                              f"{n_labels} labels: they come from different runs or splits")
    return logits


def optional_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or not JSON."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def count_safetensors_params(model_dir: Path) -> int | None:
    """Parameters in a HF dir's ``*.safetensors``, from the JSON headers only (no tensor load)."""
    files = sorted(Path(model_dir).glob(MODEL_WEIGHTS_GLOB))
    if not files:
        return None
    total = 0
    try:
        for path in files:
            with open(path, "rb") as f:
                size = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(size))
            total += sum(int(np.prod(v["shape"])) for k, v in header.items() if k != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # not a readable safetensors header: the count is left out, not guessed
    return total


