"""The HTTP ingress: a FastAPI app served by the :class:`Gateway` deployment.

The Gateway parses and checks requests (limits, token), calls a model deployment
(:mod:`raydistill.serve.classifier`) with a timeout (a model that is down or slow gives 503 +
JSON, never a hang) and serves the web pages: classify at ``/``, the study's results at
``/results`` (read from the run directory by :func:`raydistill.serve.facts.study_facts`). It
holds no model code.
"""

# No `from __future__ import annotations`: FastAPI resolves the ingress methods' annotations
# (``request: Request``) at runtime, through Serve's wrapper, whose globals are not ours.
import asyncio
import collections
import hmac
import html
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

import raydistill
from raydistill.platform.config import ServeConfig
from raydistill.platform.rundir import RunDir
from raydistill.serve.classifier import FailedRequest
from raydistill.serve.facts import empty_study, plot_path, study_facts, study_signature

logger = logging.getLogger("ray.serve")
PAGE_DIR = Path(__file__).parent / "page"
PAGE_ASSETS = {"app.js": "text/javascript", "results.js": "text/javascript", "style.css": "text/css"}
DOCS_ASSETS = "/docs-assets"
MAX_HEADER_BYTES = 16 * 1024  # what uvicorn's h11 parser allows, had Serve's proxy used it


class ClassifyRequest(BaseModel):
    """Body of ``POST /v1/classify``."""

    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] = Field(min_length=1, description="the texts to classify")
    model: Literal["student", "teacher"] = Field(default="student", description="which model answers")
    return_all_scores: bool = Field(
        default=False, description="every label's probability per text, highest first (as HF pipelines)")
    top_k: int | None = Field(
        default=None, ge=1, description="the k most probable labels per text, highest first (as HF pipelines)")

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


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="softmax probability")


class Prediction(BaseModel):
    label: str = Field(description="the most probable label")
    score: float = Field(description="its softmax probability")
    scores: list[LabelScore] | None = Field(
        default=None, description="with return_all_scores or top_k: labels by probability, highest first")


class ClassifyResponse(BaseModel):
    model: Literal["student", "teacher"]
    predictions: list[Prediction]
    latency_ms: float


class ErrorBody(BaseModel):
    """Every error answer: never a traceback, a path or an address."""

    error: str = Field(description="what is wrong, for the client")
    status: int
    request_id: str = Field(description="the id under which the server logged the details")
    limit: str | None = Field(default=None, description="the serve.* setting a 413 ran into")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers an endpoint can give, each with the JSON body."""
    why = {400: "the body is not valid JSON", 401: "a bearer token is configured and missing or wrong",
           404: "no such figure", 413: "the body, a text or the number of texts is over a serve limit",
           500: "the run's study files exist but could not be read",
           422: "the request does not match the schema, names an unknown model, or its texts cannot "
                "be classified", 429: "too many requests from this client in flight",
           431: "request headers too large", 503: "a model is down or did not answer in time"}
    return {code: {"model": ErrorBody, "description": why[code]} for code in codes}


def ranked_scores(scores: dict[str, float], k: int | None) -> list[dict[str, Any]]:
    """Labels by probability, highest first (ties in label order), the first ``k`` (None: all)."""
    ranked = sorted(enumerate(scores.items()), key=lambda item: (-item[1][1], item[0]))
    return [{"label": label, "score": score} for _, (label, score) in ranked[:k]]


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
    version=raydistill.__version__,
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
    """HTTP front: request checks, bearer token, timeouts, the pages. No model code here.

    ``run_dir`` is the run directory whose study ``/results`` shows (None: no study to show).
    """

    def __init__(
        self, models: dict[str, DeploymentHandle], limits: dict[str, Any], token: str | None = None,
        run_dir: str | None = None,
    ) -> None:
        self.models = models
        self.limits = ServeConfig.model_validate(limits)
        self.token = token or None
        self.run_dir = run_dir
        self._facts: dict[str, dict[str, Any]] = {}
        self._study_cache: tuple[Any, dict[str, Any]] | None = None  # (signature, study facts)
        self._study_lock = asyncio.Lock()
        self._in_flight: collections.Counter[str] = collections.Counter()  # classify calls per client

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

    async def _study(self) -> dict[str, Any]:
        """The run's study (:func:`study_facts`), read off the event loop and kept until one of
        the files it reads changes (a report written again, a new bench.json)."""
        if self.run_dir is None:
            return empty_study(None, "no study results: this app was deployed without a run directory")
        signature = await asyncio.to_thread(study_signature, self.run_dir)
        async with self._study_lock:  # one reader at a time: concurrent requests share its result
            if self._study_cache is None or self._study_cache[0] != signature:
                self._study_cache = (signature, await asyncio.to_thread(study_facts, self.run_dir))
            return self._study_cache[1]

    def _html(self, request: Request, name: str) -> HTMLResponse:
        base = html.escape(request.scope.get("root_path", "").rstrip("/") + "/", quote=True)
        text = (PAGE_DIR / name).read_text(encoding="utf-8")
        return HTMLResponse(text.replace("{{BASE}}", base))

    # -- endpoints

    @api.post(
        "/v1/classify", response_model=ClassifyResponse, openapi_extra=_CLASSIFY_BODY,
        summary="Classify texts with the student or the teacher",
        responses=_errors(400, 401, 413, 422, 429, 431, 503),
    )
    async def classify(self, request: Request) -> Response:
        started = time.perf_counter()
        if refused := self._oversized_headers(request) or self._denied(request):
            return refused
        client = request.client.host if request.client else "unknown"
        cap = self.limits.max_requests_per_client
        if cap is not None and self._in_flight[client] >= cap:
            return _error(429, f"{cap} requests from this client are already in flight "
                               "(serve.max_requests_per_client); retry when one has answered")
        self._in_flight[client] += 1
        try:
            return await self._classify(request, started)
        finally:
            self._in_flight[client] -= 1
            if self._in_flight[client] <= 0:
                del self._in_flight[client]

    async def _classify(self, request: Request, started: float) -> Response:
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
        called = time.perf_counter()
        predictions, why = await self._call(req.model, "__call__", req.texts)
        if why:
            return _error(503, why)
        if isinstance(predictions, FailedRequest):
            return _error(422, "these texts could not be classified", detail=predictions.reason)
        predictions = self._shaped(predictions, req)
        done = time.perf_counter()
        latency_ms = (done - started) * 1000
        # Where the time went (W3C Server-Timing): the whole Gateway, and within it the model
        # call (the handle hop, the batch wait, tokenising and the forward pass).
        timing = f"gateway;dur={latency_ms:.3f}, model;dur={(done - called) * 1000:.3f}"
        return JSONResponse(
            {"model": req.model, "predictions": predictions, "latency_ms": round(latency_ms, 3)},
            headers={"Server-Timing": timing},
        )

    def _shaped(self, predictions: list[dict[str, Any]], req: ClassifyRequest) -> list[dict[str, Any]]:
        """The top label and score per text; every label's score, ranked, when asked for."""
        k = None if req.return_all_scores else req.top_k
        out = []
        for p in predictions:
            row = {"label": p["label"], "score": p["score"]}
            if req.return_all_scores or req.top_k:
                row["scores"] = ranked_scores(p["scores"], k)
            out.append(row)
        return out

    @api.get("/v1/models", summary="The served models: size, provenance, accuracy", responses=_errors(401))
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

    @api.get("/v1/stats", summary="Observed batch sizes per model (one replica each)", responses=_errors(401))
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

    @api.get("/v1/results", summary="The study: strategy x temperature table with verdicts, the "
             "teacher, the exported student's provenance, active learning, serving ratios",
             responses=_errors(401, 500))
    async def results(self, request: Request) -> Response:
        if denied := self._denied(request):
            return denied
        try:
            study = await self._study()
        except Exception as err:  # files that exist but disagree: the message names paths, log it
            return _error(500, "the run's study files could not be read", detail=f"{type(err).__name__}: {err}")
        return JSONResponse(study)

    @api.get("/results/plots/{name}", summary="A figure of the study (PNG), by the name /v1/results lists",
             responses={200: {"content": {"image/png": {}}, "description": "the PNG"}, **_errors(401, 404)})
    async def results_plot(self, request: Request, name: str) -> Response:
        if denied := self._denied(request):
            return denied
        # The name is looked up among the known figures, never joined to a path.
        path = None if self.run_dir is None else plot_path(RunDir(self.run_dir), name)
        if path is None:
            return _error(404, f"no plot {name!r} in this run")
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self, request: Request) -> Response:
        return self._html(request, "index.html")

    @api.get("/results", response_class=HTMLResponse, include_in_schema=False)
    async def results_page(self, request: Request) -> Response:
        return self._html(request, "results.html")

    @api.get("/favicon.ico", include_in_schema=False)
    async def favicon(self) -> Response:
        return FileResponse(PAGE_DIR / "favicon.png", media_type="image/png")

    @api.get("/page/{name}", include_in_schema=False)
    async def page_asset(self, name: str) -> Response:
        if name not in PAGE_ASSETS:
            return _error(404, f"no page asset {name!r}")
        return Response((PAGE_DIR / name).read_bytes(), media_type=PAGE_ASSETS[name])
