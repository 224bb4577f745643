"""Fast paths: the one place that decides how a model runs on the device a process got.

The switches are the config's ``performance`` section (:class:`PerformanceConfig`): bf16
autocast, fused AdamW, ``torch.compile``, the attention implementation and pinned, non-blocking
host-to-device copies. Teacher training, pool scoring, student training, evaluation and serving
all ask here and decide nothing themselves. Each decision is a plain function of the device and
the switches, so it is tested on a CPU with a ``torch.device("cuda")`` object and no GPU.

Device choice is here too (:func:`select_device`): CUDA only where torch sees it. Ray may give
a process a (fractional) GPU on a node whose torch has no CUDA — a fake ``num_gpus``, a CPU
build — and that process then runs on the CPU instead of failing on its first ``.to("cuda")``.
CUDA-only switches (bf16, fused AdamW, pinned memory) are ignored on a CPU.

Dynamic padding and length bucketing are not switches: batches are always padded to their own
longest member and grouped by length (:mod:`raydistill.platform.text`, the scorers' batches,
the serving Predictor's chunks).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from raydistill.platform.config import PerformanceConfig

DEFAULTS = PerformanceConfig()
PerfLike = PerformanceConfig | Mapping[str, Any] | None


def performance(perf: PerfLike) -> PerformanceConfig:
    """``perf`` as a PerformanceConfig: None gives the defaults, a dict (a config dumped to JSON
    and sent to a Ray worker or replica) is validated."""
    if perf is None:
        return DEFAULTS
    if isinstance(perf, PerformanceConfig):
        return perf
    return PerformanceConfig.model_validate(dict(perf))


def select_device(
    want_gpu: bool, assigned: torch.device | Callable[[], torch.device] | None = None
) -> torch.device:
    """The device to run on: CUDA only when the work asked for a GPU *and* torch sees one, else
    the CPU. ``assigned`` is the CUDA device Ray picked (or a function returning it, e.g.
    ``ray.train.torch.get_device``, called only when CUDA is there); default ``cuda``."""
    if not want_gpu or not torch.cuda.is_available():
        return torch.device("cpu")
    if assigned is None:
        return torch.device("cuda")
    return assigned() if callable(assigned) else assigned


def autocast_dtype(device: torch.device, perf: PerfLike = None) -> torch.dtype | None:
    """bfloat16 on CUDA when ``bf16`` is on; None (full fp32) otherwise. On a CPU always None:
    CPU bf16 is slower than fp32 on most machines (emulated without AVX-512 BF16)."""
    return torch.bfloat16 if device.type == "cuda" and performance(perf).bf16 else None


def autocast_context(device: torch.device, perf: PerfLike = None) -> contextlib.AbstractContextManager:
    """Autocast as :func:`autocast_dtype` decides; a no-op context when it says None."""
    dtype = autocast_dtype(device, perf)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def use_fused_adamw(device: torch.device, perf: PerfLike = None) -> bool:
    """``AdamW(fused=True)`` on CUDA when ``fused_adamw`` is on; never on a CPU."""
    return device.type == "cuda" and performance(perf).fused_adamw


def make_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    lr: float,
    weight_decay: float,
    device: torch.device,
    perf: PerfLike = None,
) -> torch.optim.AdamW:
    """The AdamW every trainer uses; fused on CUDA when the switch is on, else torch's default
    (on a CPU the very optimizer ``torch.optim.AdamW(params, lr=..., weight_decay=...)`` is)."""
    fused = {"fused": True} if use_fused_adamw(device, perf) else {}
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **fused)


def restore_optimizer(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """Load a saved optimizer state and keep *this* process's kernel choice: ``load_state_dict``
    would bring back the saver's ``fused``/``foreach`` flags (a checkpoint written on a GPU and
    resumed on a CPU, or the other way round)."""
    kernels = [{k: group.get(k) for k in ("fused", "foreach")} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, chosen in zip(optimizer.param_groups, kernels):
        group.update(chosen)


def maybe_compile(model: torch.nn.Module, perf: PerfLike = None) -> torch.nn.Module:
    """``torch.compile(model, dynamic=True)`` when ``compile`` is on, else ``model`` itself.

    The compiled module shares the model's parameters: train it, load weights into the original
    (``load_state_dict`` copies in place) and save the original (:func:`models.unwrap` strips
    the wrapper). Dynamic shapes, because every batch is padded to its own longest member: one
    graph per mode serves every (batch, length) instead of a recompilation per new shape. The
    first call in each mode (train, eval) compiles: tens of seconds for a small BERT on a CPU
    (it needs a C++ compiler there), more for a large one."""
    if not performance(perf).compile:
        return model
    return torch.compile(model, dynamic=True)


def pin_memory(device: torch.device, perf: PerfLike = None) -> bool:
    """Pinned host batches and non-blocking copies: on CUDA when ``pin_memory`` is on."""
    return device.type == "cuda" and performance(perf).pin_memory


def loader_kwargs(device: torch.device, perf: PerfLike = None) -> dict[str, Any]:
    """Keyword arguments for :func:`raydistill.platform.text.make_loader` (its DataLoader)."""
    return {"pin_memory": pin_memory(device, perf)}


def to_device(tensor: torch.Tensor, device: torch.device, perf: PerfLike = None) -> torch.Tensor:
    """``tensor`` on ``device``: with pinning on, from pinned memory (pinned here unless the
    loader already did) and without blocking the host; a plain copy otherwise."""
    if not pin_memory(device, perf):
        return tensor.to(device)
    if tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def attn_implementation(perf: PerfLike = None) -> str:
    """The HF ``attn_implementation`` models are built and loaded with."""
    return performance(perf).attention
