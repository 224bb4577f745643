"""The model deployment: one :class:`Predictor` per replica behind ``@serve.batch``.

``@serve.batch`` gathers the texts of concurrent requests into one forward pass; a batch counts
*texts*, not requests (``batch_size_fn``), and a request larger than a batch is split into
batch-sized chunks. A request whose texts cannot be classified fails alone, as a
:class:`FailedRequest`, and its batch-mates are still answered.
"""

import asyncio
import collections
import dataclasses
from typing import Any

from ray import serve

from raydistill.serve.predictor import Predictor


@dataclasses.dataclass(frozen=True)
class FailedRequest:
    """Stands in for one request's predictions when that request alone could not be classified."""

    reason: str


def predict_isolated(predict: Any, requests: list[list[str]]) -> list[Any]:
    """``predict`` the texts of every request in one call; if that fails, request by request, so
    one bad request fails alone (a :class:`FailedRequest` in its place) and its batch-mates
    still get their answers."""
    try:
        flat = predict([text for texts in requests for text in texts])
    except Exception:
        return [_predict_one(predict, texts) for texts in requests]
    out, start = [], 0
    for texts in requests:
        out.append(flat[start : start + len(texts)])
        start += len(texts)
    return out


def _predict_one(predict: Any, texts: list[str]) -> Any:
    try:
        return predict(texts)
    except Exception as err:
        return FailedRequest(f"{type(err).__name__}: {err}"[:300])


def _count_texts(requests: list[list[str]]) -> int:
    """``batch_size_fn``: a batch's size is the number of texts, not of requests."""
    return sum(len(texts) for texts in requests)


@serve.deployment
class Classifier:
    """One model replica: batches texts across concurrent requests and records batch sizes."""

    def __init__(
        self,
        name: str,
        model_dir: str,
        *,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        max_length: int | None = None,
        threads: int = 1,
        label_names: list[str] | None = None,
        facts: dict[str, Any] | None = None,
        performance: dict[str, Any] | None = None,
        precision: str = "fp32",
        tokenizer_dir: str | None = None,
    ) -> None:
        import torch

        self.name = name
        self.max_batch_size = max_batch_size
        # ``performance``: the run's fast-path switches (bf16, compile, attention, pinned copies).
        self.predictor = Predictor(model_dir, max_length=max_length, label_names=label_names,
                                   performance=performance, precision=precision, tokenizer_dir=tokenizer_dir)
        if self.predictor.device.type == "cpu":
            # Ray sets OMP_NUM_THREADS from num_cpus; say it explicitly so ratios are fair.
            torch.set_num_threads(threads)
        self._predict_batch.set_max_batch_size(max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.facts = dict(facts or {})
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.requests = 0

    async def __call__(self, texts: list[str]) -> list[dict[str, Any]] | FailedRequest:
        """Predictions for ``texts``; more texts than a batch holds go as several chunks. A
        request whose texts cannot be classified gets a :class:`FailedRequest` (its batch-mates
        are answered)."""
        self.requests += 1
        size = self.max_batch_size
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        answers = await asyncio.gather(*(self._predict_batch(chunk) for chunk in chunks))
        failed = next((a for a in answers if isinstance(a, FailedRequest)), None)
        return failed or [p for answer in answers for p in answer]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01, batch_size_fn=_count_texts)
    async def _predict_batch(self, requests: list[list[str]]) -> list[Any]:
        self.batch_sizes[_count_texts(requests)] += 1
        # In a thread, so the replica keeps queueing requests (the next batch fills meanwhile).
        return await asyncio.to_thread(predict_isolated, self.predictor.predict, requests)

    def stats(self) -> dict[str, Any]:
        """Observed batch sizes (texts per forward pass) of this replica since it started."""
        sizes = self.batch_sizes
        return {
            "model": self.name,
            "replica": serve.get_replica_context().replica_id.unique_id,
            "max_batch_size": self.max_batch_size,
            "requests": self.requests,
            "batches": sum(sizes.values()),
            "texts": sum(k * v for k, v in sizes.items()),
            "max_observed_batch": max(sizes, default=0),
            "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
        }

    def info(self) -> dict[str, Any]:
        """Facts about the model for ``GET /v1/models``."""
        p = self.predictor
        return {
            "name": self.name,
            "layers": p.num_layers,
            "parameters": p.num_parameters,
            "labels": p.labels,
            "device": str(p.device),
            "precision": p.precision,
            "max_length": p.max_length,
            "max_batch_size": self.max_batch_size,
            **self.facts,
        }
