"""Plain inference: an HF classifier directory that answers ``predict(texts)``.

Apart from Ray, so that it can be tested and benchmarked directly; the model deployment
(:mod:`raydistill.serve.classifier`) holds one per replica.
"""

from pathlib import Path
from typing import TYPE_CHECKING, Any

from raydistill.platform.errors import CheckpointError

if TYPE_CHECKING:  # torch is imported lazily: the Gateway replica never needs it
    import torch


class Predictor:
    """A sequence classifier and its tokenizer, for inference only (no Ray).

    ``predict(texts)`` returns one ``{"label", "score"}`` per text, in order. bf16 autocast on
    CUDA, ``torch.inference_mode`` always; texts are truncated to ``max_length`` tokens and
    padded to the longest in their chunk.
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
    ) -> None:
        import torch
        from transformers.utils import logging as hf_logging

        from raydistill.platform.models import count_parameters, load_classifier
        from raydistill.platform.text import load_tokenizer

        hf_logging.disable_progress_bar()  # no "Loading weights" bars in replica logs
        self.model_dir = Path(model_dir)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_classifier(self.model_dir).to(self.device).eval()
        self.tokenizer = load_tokenizer(_tokenizer_dir(self.model_dir, tokenizer_dir))
        limit = int(getattr(self.model.config, "max_position_embeddings", 512))
        self.max_length = min(max_length or limit, limit)
        self.labels = _label_names(self.model.config, label_names)
        self.chunk_size = chunk_size
        self.num_layers = int(self.model.config.num_hidden_layers)
        self.num_parameters = count_parameters(self.model)

    def logits(self, texts: list[str]) -> "torch.Tensor":
        """float32 logits (N, C) on CPU, row i for ``texts[i]``."""
        import torch

        from raydistill.platform.models import MODEL_INPUTS, autocast_context
        from raydistill.platform.text import encode_texts

        # Large inputs are cut into chunks of similar length, so padding stays small.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), len(self.labels), dtype=torch.float32)
        with torch.inference_mode(), autocast_context(self.device):
            for start in range(0, len(order), self.chunk_size):
                rows = order[start : start + self.chunk_size]
                batch = encode_texts(self.tokenizer, [texts[i] for i in rows], self.max_length)
                inputs = {k: batch[k].to(self.device) for k in MODEL_INPUTS if k in batch}
                out[rows] = self.model(**inputs).logits.float().cpu()  # (len(rows), C)
        return out

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """One ``{"label": str, "score": float}`` per text (score = softmax probability)."""
        if not texts:
            return []
        probs = self.logits(texts).softmax(dim=-1)  # (N, C)
        scores, indices = probs.max(dim=-1)
        return [
            {"label": self.labels[int(i)], "score": round(float(s), 6)}
            for s, i in zip(scores.tolist(), indices.tolist())
        ]


def _tokenizer_dir(model_dir: Path, tokenizer_dir: str | Path | None) -> Path:
    """The model's own tokenizer files, else the run's shared ``tokenizer/``."""
    if tokenizer_dir is not None:
        return Path(tokenizer_dir)
    if any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
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
