"""Plain inference: an HF classifier directory that answers ``predict(texts)``.

Apart from Ray, so that it can be tested and benchmarked directly; the model deployment
(:mod:`raydistill.serve.classifier`) holds one per replica.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from raydistill.platform.errors import CheckpointError
from raydistill.platform.rundir import has_tokenizer

if TYPE_CHECKING:  # torch is imported lazily: the Gateway replica never needs it
    import torch


class Predictor:
    """A sequence classifier and its tokenizer, for inference only (no Ray).

    ``predict(texts)`` returns one ``{"label", "score", "scores"}`` per text, in order, under
    ``torch.inference_mode``; texts are truncated to ``max_length`` tokens, sorted by length and
    padded to the longest in their chunk. ``performance``: the run's ``performance`` section (a
    PerformanceConfig or its dict; None: the defaults), applied by
    :mod:`raydistill.platform.fastpath` as in training: bf16 autocast and pinned, non-blocking
    copies on CUDA, the attention implementation, ``torch.compile`` (the first requests of a
    replica then wait for the compilation). CUDA only where torch sees it, whatever GPU share
    Ray gave the replica. ``precision``: ``fp32``, ``int8`` (CPU) or ``bf16`` (CUDA), applied by
    :func:`raydistill.platform.precision.with_precision`.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str | None = None,
        max_length: int | None = None,
        label_names: list[str] | None = None,
        tokenizer_dir: str | Path | None = None,
        chunk_size: int = 256,
        performance: Any = None,
        precision: str = "fp32",
    ) -> None:
        import torch
        from transformers.utils import logging as hf_logging

        from raydistill.platform import fastpath
        from raydistill.platform.models import count_parameters, load_classifier
        from raydistill.platform.precision import with_precision
        from raydistill.platform.text import load_tokenizer

        hf_logging.disable_progress_bar()  # no "Loading weights" bars in replica logs
        self.model_dir = Path(model_dir)
        self.performance = fastpath.performance(performance)
        self.device = torch.device(device) if device else fastpath.select_device(True)
        self.model = load_classifier(self.model_dir, fastpath.attn_implementation(self.performance))
        self.model = self.model.to(self.device).eval()
        self.num_parameters = count_parameters(self.model)  # before int8 packs the weights away
        self.precision = precision
        self.model = with_precision(self.model, precision)
        self._forward = fastpath.maybe_compile(self.model, self.performance)
        self.tokenizer = load_tokenizer(_tokenizer_dir(self.model_dir, tokenizer_dir))
        limit = int(getattr(self.model.config, "max_position_embeddings", 512))
        self.max_length = min(max_length or limit, limit)
        self.labels = _label_names(self.model.config, label_names)
        self.chunk_size = chunk_size
        self.num_layers = int(self.model.config.num_hidden_layers)

    def logits(self, texts: list[str]) -> "torch.Tensor":
        """float32 logits (N, C) on CPU, row i for ``texts[i]``."""
        import torch

        from raydistill.platform.fastpath import autocast_context
        from raydistill.platform.models import model_inputs
        from raydistill.platform.text import encode_texts

        # Large inputs are cut into chunks of similar length, so padding stays small.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), len(self.labels), dtype=torch.float32)
        with torch.inference_mode(), autocast_context(self.device, self.performance):
            for start in range(0, len(order), self.chunk_size):
                rows = order[start : start + self.chunk_size]
                batch = encode_texts(self.tokenizer, [texts[i] for i in rows], self.max_length)
                inputs = model_inputs(batch, self.device, self.performance)
                out[rows] = self._forward(**inputs).logits.float().cpu()  # (len(rows), C)
        return out

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """One ``{"label", "score", "scores"}`` per text: the top label, its softmax probability,
        and every label's probability by name, in label order (the HTTP API ranks and cuts them)."""
        if not texts:
            return []
        from raydistill.platform.metrics import softmax

        probs = softmax(self.logits(texts).numpy())  # (N, C)
        out = []
        for row in probs.tolist():
            top = max(range(len(row)), key=row.__getitem__)
            out.append({"label": self.labels[top], "score": round(row[top], 6),
                        "scores": {name: round(p, 6) for name, p in zip(self.labels, row)}})
        return out


def _tokenizer_dir(model_dir: Path, tokenizer_dir: str | Path | None) -> Path:
    """The model's own tokenizer files, else the run's shared ``tokenizer/``."""
    if tokenizer_dir is not None:
        return Path(tokenizer_dir)
    if has_tokenizer(model_dir):
        return model_dir
    shared = model_dir.parent / "tokenizer"
    if shared.is_dir():
        return shared
    raise CheckpointError(f"{model_dir} has no tokenizer files and {shared} does not exist")


def _label_names(config: Any, names: list[str] | None) -> list[str]:
    n = int(config.num_labels)
    if names is not None and len(names) == n:
        return [str(x) for x in names]
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]
