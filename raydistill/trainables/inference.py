"""Batch inference of a saved classifier on tokenised splits, as one Ray task.

Both exports use it: the teacher's logits (cached once per run for the sweep and the report)
and the winning cell's students' (every seed's test logits, for the report's test metrics).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
import torch

from raydistill.platform.fastpath import (
    attn_implementation,
    loader_kwargs,
    maybe_compile,
    performance,
    select_device,
)
from raydistill.platform.models import load_classifier, predict_logits
from raydistill.platform.text import Encoded, make_loader


@ray.remote
def _split_logits_task(model_dir: str, encoded: dict[str, Encoded], batch_size: int,
                       pad_token_id: int, threads: int,
                       perf: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    torch.set_num_threads(threads)
    perf = performance(perf)
    device = select_device(True)
    model = maybe_compile(load_classifier(model_dir, attn_implementation(perf)).to(device), perf)
    return {
        name: predict_logits(model, make_loader(enc, batch_size, pad_token_id=pad_token_id,
                                                **loader_kwargs(device, perf)), device, perf)
        .numpy().astype(np.float32)
        for name, enc in encoded.items()
    }


def idle_cpus() -> int:
    """Threads for a task that has the cluster to itself (between stages): the CPUs Ray has
    free now, at least 1, so an export or a cache fill leaves no core idle."""
    return max(1, int(ray.available_resources().get("CPU", 1)))


def split_logits(model_dir: str, encoded: dict[str, Encoded], batch_size: int, pad_token_id: int, *,
                 threads: int = 1, num_cpus: float = 1.0, num_gpus: float = 0.0,
                 perf: Any = None) -> dict[str, np.ndarray]:
    """float32 logits (N, C) of the model in ``model_dir`` on every split in ``encoded``, run
    with the fast paths of ``perf`` (the config's ``performance`` section; None: defaults)."""
    return models_split_logits([model_dir], encoded, batch_size, pad_token_id, threads=threads,
                               num_cpus=num_cpus, num_gpus=num_gpus, perf=perf)[0]


def models_split_logits(model_dirs: list[str], encoded: dict[str, Encoded], batch_size: int,
                        pad_token_id: int, *, threads: int = 1, num_cpus: float = 1.0,
                        num_gpus: float = 0.0, perf: Any = None) -> list[dict[str, np.ndarray]]:
    """:func:`split_logits` of several models, one Ray task each, run side by side."""
    task = _split_logits_task.options(num_cpus=num_cpus, num_gpus=num_gpus)
    shared = ray.put(encoded)
    switches = performance(perf).model_dump()
    return ray.get([task.remote(d, shared, batch_size, pad_token_id, threads, switches) for d in model_dirs])
