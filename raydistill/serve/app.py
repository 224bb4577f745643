"""Ray Serve: the student and the teacher behind one HTTP gateway.

Three pieces, from plain to Serve-specific:

- :class:`Predictor` loads an HF classifier directory and answers ``predict(texts)``; it knows
  nothing about Ray and is tested directly.
- :class:`Classifier` is a deployment holding one Predictor. ``@serve.batch`` gathers the texts
  of concurrent requests into one forward pass; a batch counts *texts*, not requests
  (``batch_size_fn``), and a request larger than a batch is split into batch-sized chunks.
- :class:`Gateway` is the FastAPI ingress: it parses and checks requests (limits, token),
  calls a Classifier with a timeout (a model that is down or slow gives 503 + JSON, never a
  hang) and serves the web page at ``/``.

:func:`build_app` is the Serve builder (``serve run raydistill.serve.app:build_app
run_dir=runs/x``); :func:`deploy` starts Serve on this Ray cluster and returns the base URL.
"""

# No `from __future__ import annotations`: FastAPI resolves the ingress methods' annotations
# (``request: Request``) at runtime, through Serve's wrapper, whose globals are not ours.
import asyncio
import collections
import csv
import dataclasses
import hmac
import html
import json
import math
import os
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from raydistill.platform.config import ExperimentConfig, ServeConfig, load_config
from raydistill.platform.errors import CheckpointError, ConfigError, RaydistillError
from raydistill.platform.logs import quiet_libraries
from raydistill.platform.rundir import RunDir, atomic_write_text

if TYPE_CHECKING:  # torch is imported lazily: the Gateway replica never needs it
    import torch

logger = logging.getLogger("ray.serve")
quiet_libraries()  # importing Serve gave its logger a console handler: the CLI's verbosity applies
APP_NAME = "raydistill"
TOKEN_ENV = "RAYDISTILL_API_TOKEN"
MODEL_NAMES = ("student", "teacher")
PAGE_DIR = Path(__file__).parent / "page"
PAGE_ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
DOCS_ASSETS = "/docs-assets"
# The Gateway only parses and forwards: it can hold many more requests than a model replica,
# and must, so that hundreds of slow or stalled clients leave room for /healthz and good ones.
GATEWAY_MIN_ONGOING = 1024
# Serve's proxy cuts a request this long after the Gateway's own model timeout would have
# answered: a backstop for a request stuck anywhere, never the usual way a slow one ends.
PROXY_TIMEOUT_MARGIN_S = 5.0
MAX_HEADER_BYTES = 16 * 1024  # what uvicorn's h11 parser allows, had Serve's proxy used it


# ----------------------------------------------------------------------------- plain inference


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


# ----------------------------------------------------------------------------- model facts


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _finite(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _first(sources: list[dict[str, Any]], keys: tuple[str, ...]) -> float | None:
    for source in sources:
        for key in keys:
            if (x := _finite(source.get(key))) is not None:
                return x
    return None


def _summary_accuracy(run: RunDir, provenance: dict[str, Any]) -> float | None:
    """The student's cell (strategy, temperature) in ``summary.csv``: its mean val accuracy."""
    if not run.summary_csv.is_file() or "strategy" not in provenance:
        return None
    try:
        with run.summary_csv.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return None
    for row in rows:
        if row.get("strategy") != str(provenance["strategy"]):
            continue
        t = _finite(row.get("temperature"))
        if t is not None and _finite(provenance.get("temperature")) not in (None, t):
            continue
        for key in ("val_accuracy_mean", "val_accuracy", "mean_val_accuracy"):
            if (x := _finite(row.get(key))) is not None:
                return x
    return None


def model_facts(run: RunDir, name: str) -> dict[str, Any]:
    """What ``GET /v1/models`` says about a model besides its size: provenance and accuracy.

    Reads ``<model>/provenance.json`` (the student's, with ``metrics``), ``<model>/eval.json``
    (the teacher's) and, for the student's mean over seeds when provenance lacks it, its cell
    in ``<run>/summary.csv``. Missing files give ``None``s, never an error.
    """
    model_dir = run.root / name
    provenance = _read_json(model_dir / "provenance.json")
    evaluation = _read_json(model_dir / "eval.json")
    metrics = provenance.get("metrics") if isinstance(provenance.get("metrics"), dict) else {}
    sources = [evaluation, metrics, provenance]
    val = _first(sources, ("validation_accuracy", "val_accuracy"))
    cell_mean = _first(sources, ("val_accuracy_mean",))
    if cell_mean is None and name == "student":
        cell_mean = _summary_accuracy(run, provenance)
    return {
        "strategy": provenance.get("strategy"),
        "teacher_layers": provenance.get("teacher_layers"),
        "temperature": provenance.get("temperature"),
        "provenance": provenance or None,
        "validation_accuracy": val if val is not None else cell_mean,
        # The student's cell (strategy x temperature) averaged over seeds, when known.
        "validation_accuracy_mean_over_seeds": cell_mean,
        "test_accuracy": _first(sources, ("test_accuracy",)),
    }


# ----------------------------------------------------------------------------- the deployments


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
    ) -> None:
        import torch

        self.name = name
        self.max_batch_size = max_batch_size
        self.predictor = Predictor(model_dir, max_length=max_length, label_names=label_names)
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
            "max_length": p.max_length,
            "max_batch_size": self.max_batch_size,
            **self.facts,
        }


class ClassifyRequest(BaseModel):
    """Body of ``POST /v1/classify``."""

    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] = Field(min_length=1, description="the texts to classify")
    model: StrictStr = Field(default="student", description="'student' or 'teacher'")

    @field_validator("texts")
    @classmethod
    def _unicode_text(cls, texts: list[str]) -> list[str]:
        """JSON can carry lone surrogates (``"\\ud800"``) that no tokenizer can encode: refuse
        them here, naming the text, instead of failing a model batch."""
        for i, text in enumerate(texts):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                raise ValueError(f"texts.{i} is not valid Unicode text (a lone surrogate at "
                                 f"character {err.start}); send UTF-8 text") from None
        return texts


class Prediction(BaseModel):
    label: str
    score: float


class ClassifyResponse(BaseModel):
    model: str
    predictions: list[Prediction]
    latency_ms: float


def _error(status: int, message: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    """A JSON error: status, a message for the client and a request id. ``detail`` (exception
    text that may name hosts, pids, actors or paths) goes only to the replica's log, under that
    id."""
    request_id = uuid.uuid4().hex[:12]
    if detail:
        logger.warning("request %s: %s (%s)", request_id, message, detail)
    return JSONResponse({"error": message, "status": status, "request_id": request_id, **extra},
                        status_code=status)


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "body"
        parts.append(f"{where}: {e['msg']}")
    return "; ".join(parts)


# fastapi-offline serves Swagger UI and ReDoc from its own package files: /docs works offline.
api = FastAPIOffline(
    title="raydistill",
    description="A distilled student and its teacher, side by side.",
    version="1",
    static_url=DOCS_ASSETS,
)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(exc.status_code, str(exc.detail))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error(422, f"invalid request: {exc.errors()}")


_CLASSIFY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ClassifyRequest.model_json_schema()}},
    }
}


async def _await(response: Any) -> Any:
    """A DeploymentResponse as a coroutine (``asyncio.wait_for`` wants one)."""
    return await response


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds ``limit`` bytes."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# Serve pickles a deployment class when it is decorated, with the module globals defined so
# far: everything the Gateway uses is defined above it.
@serve.deployment
@serve.ingress(api)
class Gateway:
    """HTTP front: request checks, bearer token, timeouts, the page. No model code here."""

    def __init__(
        self, models: dict[str, DeploymentHandle], limits: dict[str, Any], token: str | None = None
    ) -> None:
        self.models = models
        self.limits = ServeConfig.model_validate(limits)
        self.token = token or None
        self._facts: dict[str, dict[str, Any]] = {}

    # -- checks

    @staticmethod
    def _oversized_headers(request: Request) -> JSONResponse | None:
        """431 for oversized headers: Serve's proxy accepts them (it exposes no limit), so the
        Gateway refuses to carry them further."""
        size = sum(len(name) + len(value) for name, value in request.scope["headers"])
        if size > MAX_HEADER_BYTES:
            return _error(431, f"request headers are {size} bytes; the limit is {MAX_HEADER_BYTES}")
        return None

    def _denied(self, request: Request) -> JSONResponse | None:
        if self.token is None:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), self.token.encode()
        ):
            return None
        return JSONResponse(
            {"error": "missing or wrong bearer token (Authorization: Bearer <token>)", "status": 401},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def _read_json(self, request: Request) -> tuple[Any, JSONResponse | None]:
        limit = self.limits.max_body_bytes
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            return None, _error(415, f"Content-Type must be application/json, got {ctype or 'none'!r}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None, _error(
                413, f"body is {declared} bytes; the limit is {limit} (serve.max_body_bytes)",
                limit="max_body_bytes",
            )
        timeout = self.limits.body_timeout_s
        try:
            body = await asyncio.wait_for(_read_body(request, limit), timeout)
        except asyncio.TimeoutError:  # a stalled client must not hold a slot for ever
            return None, _error(408, f"the request body did not arrive within {timeout:g} s "
                                     "(serve.body_timeout_s)")
        if body is None:
            return None, _error(413, f"body exceeds {limit} bytes (serve.max_body_bytes)", limit="max_body_bytes")
        try:
            return json.loads(body), None
        except (ValueError, RecursionError) as err:
            return None, _error(400, f"body is not valid JSON: {err}")

    def _over_limit(self, req: ClassifyRequest) -> JSONResponse | None:
        most = self.limits.max_texts_per_request
        if len(req.texts) > most:
            return _error(
                413, f"{len(req.texts)} texts in one request; the limit is {most} "
                "(serve.max_texts_per_request)", limit="max_texts_per_request",
            )
        chars = self.limits.max_chars_per_text
        for i, text in enumerate(req.texts):
            if len(text) > chars:
                return _error(
                    413, f"texts.{i} has {len(text)} characters; the limit is {chars} "
                    "(serve.max_chars_per_text)", limit="max_chars_per_text",
                )
        return None

    async def _call(
        self, name: str, method: str, *args: Any, timeout_s: float | None = None
    ) -> tuple[Any, str | None]:
        """Call a model deployment: (answer, None), or (None, why) on a timeout or a dead model."""
        timeout_s = timeout_s or self.limits.request_timeout_s
        handle = self.models[name]
        if method != "__call__":
            handle = handle.options(method_name=method)
        response = handle.remote(*args)
        try:
            return await asyncio.wait_for(_await(response), timeout_s), None
        except asyncio.TimeoutError:
            response.cancel()
            return None, f"model {name!r} did not answer within {timeout_s:g} s (serve.request_timeout_s)"
        except Exception as err:  # replica died, deployment unavailable, ...
            # The exception names hosts, pids and actors: it goes to the log, not to the client.
            logger.warning("model %r unavailable: %s: %s", name, type(err).__name__, err)
            return None, f"model {name!r} is unavailable"

    # -- endpoints

    @api.post(
        "/v1/classify", response_model=ClassifyResponse, openapi_extra=_CLASSIFY_BODY,
        summary="Classify texts with the student or the teacher",
    )
    async def classify(self, request: Request) -> Response:
        started = time.perf_counter()
        if refused := self._oversized_headers(request) or self._denied(request):
            return refused
        body, err = await self._read_json(request)
        if err:
            return err
        if not isinstance(body, dict):
            kind = type(body).__name__
            return _error(422, f'body must be a JSON object like {{"texts": [...]}}, got {kind}')
        try:
            req = ClassifyRequest.model_validate(body)
        except ValidationError as verr:
            return _error(422, f"invalid request: {_describe(verr)}")
        if err := self._over_limit(req):
            return err
        if req.model not in self.models:
            return _error(422, f"unknown model {req.model!r}; available: {', '.join(self.models)}")
        predictions, why = await self._call(req.model, "__call__", req.texts)
        if why:
            return _error(503, why)
        if isinstance(predictions, FailedRequest):
            return _error(422, "these texts could not be classified", detail=predictions.reason)
        latency_ms = (time.perf_counter() - started) * 1000
        return JSONResponse(
            {"model": req.model, "predictions": predictions, "latency_ms": round(latency_ms, 3)}
        )

    @api.get("/v1/models", summary="The served models: size, provenance, accuracy")
    async def list_models(self, request: Request) -> Response:
        if denied := self._denied(request):
            return denied
        out = []
        for name in self.models:
            if name not in self._facts:
                facts, why = await self._call(name, "info")
                if why:
                    out.append({"name": name, "available": False, "error": why})
                    continue
                self._facts[name] = facts
            out.append({**self._facts[name], "available": True})
        return JSONResponse({"models": out})

    @api.get("/v1/stats", summary="Observed batch sizes per model (one replica each)")
    async def stats(self, request: Request) -> Response:
        if denied := self._denied(request):
            return denied
        out = {}
        for name in self.models:
            stats, why = await self._call(name, "stats")
            out[name] = stats if why is None else {"error": why}
        return JSONResponse(out)

    @api.get("/healthz", summary="200 when every model answers, else 503")
    async def healthz(self) -> Response:
        timeout_s = min(5.0, self.limits.request_timeout_s)
        calls = [self._call(name, "info", timeout_s=timeout_s) for name in self.models]
        results = await asyncio.gather(*calls)
        models = {name: why is None for name, (_, why) in zip(self.models, results)}
        ok = all(models.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "models": models},
                            status_code=200 if ok else 503)

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self, request: Request) -> Response:
        base = html.escape(request.scope.get("root_path", "").rstrip("/") + "/", quote=True)
        text = (PAGE_DIR / "index.html").read_text(encoding="utf-8")
        return HTMLResponse(text.replace("{{BASE}}", base))

    @api.get("/favicon.ico", include_in_schema=False)
    async def favicon(self) -> Response:
        return FileResponse(PAGE_DIR / "favicon.png", media_type="image/png")

    @api.get("/page/{name}", include_in_schema=False)
    async def page_asset(self, name: str) -> Response:
        if name not in PAGE_ASSETS:
            return _error(404, f"no page asset {name!r}")
        return Response((PAGE_DIR / name).read_bytes(), media_type=PAGE_ASSETS[name])


# ----------------------------------------------------------------------------- building, deploying


class BuildArgs(BaseModel):
    """Arguments of :func:`build_app` (``serve run raydistill.serve.app:build_app key=value``).

    ``run_dir`` is required; every other field overrides the run's ``serve`` config section.
    ``token`` falls back to the ``RAYDISTILL_API_TOKEN`` environment variable of the process
    that builds the app; an empty string turns the token off.
    """

    model_config = ConfigDict(extra="forbid")

    run_dir: str
    token: str | None = None
    models: list[str] | None = None
    max_batch_size: int | None = None
    batch_wait_timeout_s: float | None = None
    max_ongoing_requests: int | None = None
    num_replicas: int | None = None
    cpus_per_replica: float | None = None
    gpus_per_replica: float | None = None
    max_texts_per_request: int | None = None
    max_chars_per_text: int | None = None
    max_body_bytes: int | None = None
    body_timeout_s: float | None = None
    request_timeout_s: float | None = None

    def overrides(self) -> dict[str, Any]:
        return {
            k: v for k, v in self.model_dump().items()
            if k in ServeConfig.model_fields and v is not None
        }


def serve_settings(cfg: ExperimentConfig, overrides: dict[str, Any] | None = None) -> ServeConfig:
    """The run's ``serve`` section with ``overrides`` applied and validated (ConfigError)."""
    unknown = sorted(set(overrides or {}) - set(ServeConfig.model_fields))
    if unknown:
        raise ConfigError(f"unknown serve settings {unknown}; valid: {sorted(ServeConfig.model_fields)}")
    tree = {**cfg.serve.model_dump(), **(overrides or {})}
    try:
        return ServeConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(f"invalid serve settings: {_describe(err)}") from None


def settings_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """The overrides a builder takes (host and port belong to Serve's proxy, not the app)."""
    return {k: v for k, v in overrides.items() if k not in ("host", "port")}


def model_ongoing_requests(settings: ServeConfig) -> int:
    """A model replica's ``max_ongoing_requests``: room for one batch filling while one runs."""
    return settings.max_ongoing_requests or 2 * settings.max_batch_size


def served_models(run: RunDir, names: list[str] | None = None) -> list[str]:
    """The models to serve: ``names`` (checked), else those the run directory holds."""
    present = [n for n in MODEL_NAMES if (run.root / n / "config.json").is_file()]
    if names is None:
        if not present:
            raise CheckpointError(f"{run.root} holds neither student/ nor teacher/ (no config.json)")
        return present
    missing = [n for n in names if n not in present]
    if missing or not names:
        raise CheckpointError(f"cannot serve {missing or names}: {run.root} holds {present}")
    return list(names)


def build_app(args: BuildArgs | dict[str, Any]) -> serve.Application:
    """The Serve application for a run directory: a Classifier per model behind a Gateway."""
    if not isinstance(args, BuildArgs):
        args = BuildArgs.model_validate(args)
    run = RunDir.existing(args.run_dir)
    cfg = load_config(run.config)
    settings = serve_settings(cfg, args.overrides())
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    labels_file = run.labels / "label_names.json"
    label_names = json.loads(labels_file.read_text(encoding="utf-8")) if labels_file.is_file() else None
    actor_options = {"num_cpus": settings.cpus_per_replica, "num_gpus": settings.gpus_per_replica}
    models = {}
    for name in served_models(run, args.models):
        models[name] = Classifier.options(
            name=name,
            num_replicas=settings.num_replicas,
            max_ongoing_requests=model_ongoing_requests(settings),
            ray_actor_options=actor_options,
        ).bind(
            name,
            str(run.root / name),
            max_batch_size=settings.max_batch_size,
            batch_wait_timeout_s=settings.batch_wait_timeout_s,
            max_length=cfg.tokenizer.max_length,
            threads=cfg.threads_per_worker,
            label_names=label_names,
            facts=model_facts(run, name),
        )
    gateway = Gateway.options(
        num_replicas=settings.num_replicas,
        max_ongoing_requests=max(GATEWAY_MIN_ONGOING, 4 * model_ongoing_requests(settings)),
        ray_actor_options={"num_cpus": settings.cpus_per_replica},
    )
    return gateway.bind(models, settings.model_dump(), token or None)


def _http_options(host: str, port: int, settings: ServeConfig) -> dict[str, Any]:
    """Serve's proxy: where it listens, and a timeout for any request stuck past the Gateway's."""
    return {"host": host, "port": port, "request_timeout_s": settings.request_timeout_s + PROXY_TIMEOUT_MARGIN_S}


def cpus_needed(settings: ServeConfig, n_models: int) -> float:
    """CPUs one application reserves: every model and the gateway, times replicas."""
    return settings.cpus_per_replica * (n_models + 1) * settings.num_replicas


def serve_config_yaml(
    run: RunDir, host: str | None, port: int | None, overrides: dict[str, Any], models: list[str] | None = None
) -> str:
    """A ``serve build``-style config, so ``serve deploy <file>`` runs this app on a cluster.
    ``host``/``port`` default to the run's serve settings (with ``overrides``)."""
    settings = serve_settings(load_config(run.config), overrides)
    config = {
        "proxy_location": "EveryNode",
        "http_options": _http_options(host or settings.host, port or settings.port, settings),
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "raydistill.serve.app:build_app",
                "args": {
                    "run_dir": str(run.root),
                    **({"models": models} if models else {}),
                    **settings_overrides(overrides),
                },
            }
        ],
    }
    header = (
        "# Written by raydistill for the run where it lies; `raydistill serve RUN` rewrites it\n"
        "# after the run is copied or moved (run_dir below must be where the cluster sees it).\n"
        "# On a cluster: `RAY_AUTH_MODE=token serve deploy serve_config.yaml` (Ray 2.60's head\n"
        "# requires token authentication from every client by default).\n"
        "# Every node needs raydistill installed and the run directory on shared storage.\n"
        "# The app is built on the cluster: for a bearer token, add to this application\n"
        f"#   runtime_env: {{env_vars: {{{TOKEN_ENV}: ...}}}}   (never commit the token).\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


def serve_http_address() -> tuple[str, int] | None:
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return None
    cfg = client.http_config
    return cfg.host, int(cfg.port)


def require_ray() -> None:
    """Raise RaydistillError unless this process is connected to Ray. Serve would otherwise
    call ``ray.init()`` itself, which attaches to any head running on the machine."""
    import ray

    if not ray.is_initialized():
        raise RaydistillError(
            "not connected to Ray: call ray.init(address='local') (or the cluster's address) "
            "before deploying or benchmarking"
        )


@dataclasses.dataclass(frozen=True)
class AppSpec:
    """One application of a run for :func:`deploy_many`: its name, route and settings."""

    name: str = APP_NAME
    route_prefix: str = "/"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    models: list[str] | None = None


def deploy_many(
    run_dir: str | Path,
    specs: list[AppSpec],
    host: str | None = None,
    port: int | None = None,
    token: str | None = None,
) -> list[str]:
    """Deploy several applications of one run at once (their replicas start in parallel);
    return their base URLs. Arguments as in :func:`deploy`."""
    from raydistill.trainables.resources import preflight

    require_ray()
    run = RunDir.existing(run_dir)
    cfg = load_config(run.config)
    if token is None:
        token = os.environ.get(TOKEN_ENV, "")
    targets, cpus, gpus = [], 0.0, 0.0
    for spec in specs:
        settings = serve_settings(cfg, spec.overrides)
        args = BuildArgs(run_dir=str(run.root), token=token, models=spec.models,
                         **settings_overrides(spec.overrides))
        n_models = len(served_models(run, spec.models))
        cpus += cpus_needed(settings, n_models)
        gpus += settings.gpus_per_replica * n_models * settings.num_replicas
        targets.append(serve.RunTarget(build_app(args), name=spec.name, route_prefix=spec.route_prefix))
    # Ray would queue replicas that cannot be placed and wait forever: fail with the settings.
    preflight("serve", {"CPU": (cpus, "serve.cpus_per_replica x (models + gateway) x num_replicas")})
    if gpus:
        preflight("serve", {"GPU": (gpus, "serve.gpus_per_replica x models x serve.num_replicas")})
    serve.start(http_options=_http_options(host or cfg.serve.host, port or cfg.serve.port, cfg.serve))
    serve.run_many(targets)
    actual_host, actual_port = serve_http_address() or (host, port)
    if actual_host in ("0.0.0.0", "::", ""):
        actual_host = "127.0.0.1"
    return [f"http://{actual_host}:{actual_port}{spec.route_prefix.rstrip('/')}" for spec in specs]


def deploy(
    run_dir: str | Path,
    host: str | None = None,
    port: int | None = None,
    token: str | None = None,
    *,
    models: list[str] | None = None,
    name: str = APP_NAME,
    route_prefix: str = "/",
    write_config: bool = True,
    **overrides: Any,
) -> str:
    """Deploy a run's student and teacher on the connected Ray cluster; return the base URL.

    ``host``/``port`` default to the run's ``serve.host``/``serve.port`` (127.0.0.1:8000) and
    only apply when this call starts Serve (the URL returned is where Serve really listens).
    ``token=None`` reads ``RAYDISTILL_API_TOKEN``; ``token=""`` turns it off. ``models`` picks
    some of student/teacher (default: all present). ``overrides`` are ``serve`` settings
    (``max_batch_size=8``). Writes ``<run>/serve_config.yaml`` unless ``write_config=False``.
    Returns once the app answers. Raises RaydistillError when not connected to Ray (call
    ``ray.init`` first), ConfigError, CheckpointError, ResourceError (does not fit the cluster).
    """
    spec = AppSpec(name=name, route_prefix=route_prefix, overrides=overrides, models=models)
    url = deploy_many(run_dir, [spec], host=host, port=port, token=token)[0]
    if write_config:
        run = RunDir.existing(run_dir)
        atomic_write_text(run.root / "serve_config.yaml", serve_config_yaml(run, host, port, overrides, models))
    return url


def shutdown(name: str | None = None) -> None:
    """Delete one application (``name``), or shut all of Serve down (``None``)."""
    if name is None:
        serve.shutdown()
    else:
        serve.delete(name)
