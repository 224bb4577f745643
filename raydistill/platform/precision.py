"""The numeric precision an exported classifier runs at: ``fp32`` (as trained), ``int8`` (CPU)
or ``bf16`` (CUDA).

``int8`` is torch's dynamic quantisation of the encoder's Linear layers with two choices, each
of which took error off torch's default on the default run's exports (validation, 2542 texts in
121 films, 2 threads, batches of 32; intervals from the report's film-cluster bootstrap):

- **weights per output channel** (``per_channel_dynamic_qconfig``), and
- **activations on all 8 bits** where the CPU has VNNI. torch's dynamic Linear quantises its
  input to 7 bits (``reduce_range``) so that the pairwise int16 sums of pre-VNNI x86 cannot
  overflow; VNNI accumulates in int32, so the 8th bit is free there, and it halves the
  activation rounding error. Elsewhere torch's 7 bits stay.

Measured against fp32 (int8 − fp32 in points, 95% interval, agreement), student | teacher:
torch's default (per-tensor, 7-bit) -0.28 [-1.00, +0.41] 96.9% | -1.53 [-2.46, -0.64] 93.9%;
per-channel alone -0.63 [-1.20, -0.05] 97.5% | -0.87 [-1.77, -0.04] 95.1%; 8-bit alone (teacher)
-0.94 [-1.77, -0.19] 94.8%; per-channel with 8-bit
activations (this recipe) -0.16 [-0.53, +0.22] 98.8%, equivalent at 1 point, | -0.59 [-1.19,
+0.00] 97.7%, inconclusive, at about 2.1-2.2x fp32's texts/s for both. The pooler and the
classifier head stay fp32: it changed no prediction and costs nothing measurable, and nothing
after them absorbs their rounding; embeddings are not Linear layers and stay fp32 too. Keeping
more in fp32 buys accuracy with speed: the teacher's whole first layer in fp32 makes it
equivalent (-0.12 [-0.63, +0.38]) but on the 3-layer student the same rule keeps a third of the
encoder in fp32. ``benchmarks/precision.py`` measures a run's models; benchmarks/RESULTS.md has
the figures.
"""

from __future__ import annotations

import warnings

import torch
from torch.ao.nn.quantized import dynamic as qdynamic

from raydistill.platform.config import PRECISIONS
from raydistill.platform.errors import ConfigError


class Int8Linear(qdynamic.Linear):
    """torch's dynamic int8 Linear, its input quantised to 8 bits instead of 7 (safe with VNNI)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False)
        return y.to(x.dtype)


def full_range_activations() -> bool:
    """Whether int8 activations may use all 8 bits: x86 with VNNI (int32 accumulation)."""
    return bool(getattr(torch.cpu, "_is_vnni_supported", lambda: False)())


def with_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The model to run at ``precision``: ``model`` itself for fp32, a quantised copy for int8
    (``model`` is left as it was), ``model`` cast to bfloat16 for bf16. Raises ConfigError for an
    unknown precision, int8 off the CPU, bf16 off CUDA, or int8 on a model without an encoder."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    device = next(model.parameters()).device
    if precision == "int8":
        if device.type != "cpu":
            raise ConfigError(f"precision int8 runs on the CPU only; the model is on {device}")
        return quantize_int8(model)
    if precision == "bf16":
        if device.type != "cuda":
            raise ConfigError(f"precision bf16 needs a CUDA GPU (the model is on {device}); "
                              "on a CPU use int8 or fp32")
        return model.to(torch.bfloat16)
    return model


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose encoder Linear layers are dynamic int8 (the recipe in this
    module's docstring); every other module stays fp32."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    encoder = getattr(getattr(model, "base_model", model), "encoder", None)
    if encoder is None:
        raise ConfigError(f"int8 needs a BERT-style model with an encoder; {type(model).__name__} has none")
    prefix = next(name for name, module in model.named_modules() if module is encoder)
    spec = {f"{prefix}.{name}": per_channel_dynamic_qconfig
            for name, module in encoder.named_modules() if isinstance(module, torch.nn.Linear)}
    mapping = {torch.nn.Linear: Int8Linear if full_range_activations() else qdynamic.Linear}
    with warnings.catch_warnings():  # torch 2.13 marks its quantised tensor types deprecated; they work
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
        return quantize_dynamic(model, qconfig_spec=spec, mapping=mapping, inplace=False)
