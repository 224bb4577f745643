"""Ray Serve: the student and the teacher behind one HTTP gateway, built and deployed.

The pieces live in their own modules: :mod:`~raydistill.serve.predictor` (plain inference, no
Ray), :mod:`~raydistill.serve.classifier` (the batching model deployment) and
:mod:`~raydistill.serve.gateway` (the FastAPI ingress). This module puts them together:
:func:`build_app` is the Serve builder (``serve run raydistill.serve.app:build_app
run_dir=runs/x``); :func:`deploy` starts Serve on this Ray cluster and returns the base URL.
"""

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from ray import serve

from raydistill.platform.config import PRECISIONS, ExperimentConfig, ServeConfig, load_config
from raydistill.platform.errors import CheckpointError, ConfigError, RaydistillError, ResourceError
from raydistill.platform.logs import quiet_libraries
from raydistill.platform.rundir import MODEL_CONFIG, RunDir, atomic_write_text, has_model
from raydistill.serve.classifier import Classifier
from raydistill.serve.facts import model_facts
from raydistill.serve.gateway import Gateway, _describe

quiet_libraries()  # importing Serve gave its logger a console handler: the CLI's verbosity applies
APP_NAME = "raydistill"
TOKEN_ENV = "RAYDISTILL_API_TOKEN"
MODEL_NAMES = ("student", "teacher")
# The Gateway only parses and forwards: it can hold many more requests than a model replica,
# and must, so that hundreds of slow or stalled clients leave room for /healthz and good ones.
GATEWAY_MIN_ONGOING = 1024
# Serve's proxy cuts a request this long after the Gateway's own model timeout would have
# answered: a backstop for a request stuck anywhere, never the usual way a slow one ends.
PROXY_TIMEOUT_MARGIN_S = 5.0


class ModelSource(BaseModel):
    """A model served from another directory of the run (a frontier depth's checkpoint) under
    one of the API's model names, at a precision of its own; the run's shared tokenizer reads
    its texts."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str
    precision: Literal[PRECISIONS] = "fp32"  # type: ignore[valid-type]


class BuildArgs(BaseModel):
    """Arguments of :func:`build_app` (``serve run raydistill.serve.app:build_app key=value``).

    ``run_dir`` is required. ``sources`` serves the named models from those directories instead
    of the run's student and teacher. Every other field overrides the run's ``serve`` section.
    ``token`` falls back to the ``RAYDISTILL_API_TOKEN`` environment variable of the process
    that builds the app; an empty string turns the token off.
    """

    model_config = ConfigDict(extra="forbid")

    run_dir: str
    token: str | None = None
    models: list[str] | None = None
    sources: dict[str, ModelSource] | None = None
    max_batch_size: int | None = None
    batch_wait_timeout_s: float | None = None
    max_ongoing_requests: int | None = None
    num_replicas: int | None = None
    gateway_replicas: int | None = None
    cpus_per_replica: float | None = None
    gpus_per_replica: float | None = None
    max_texts_per_request: int | None = None
    max_chars_per_text: int | None = None
    max_body_bytes: int | None = None
    max_requests_per_client: int | None = None
    access_log: bool | None = None
    body_timeout_s: float | None = None
    precision: Literal[PRECISIONS] | None = None  # type: ignore[valid-type]
    request_timeout_s: float | None = None

    @field_validator("sources")
    @classmethod
    def _api_names(cls, sources: dict[str, ModelSource] | None) -> dict[str, ModelSource] | None:
        unknown = sorted(set(sources or {}) - set(MODEL_NAMES))
        if unknown:
            raise ValueError(f"sources are served as {' or '.join(MODEL_NAMES)} (the API's model names), not {unknown}")
        return sources

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
    present = [n for n in MODEL_NAMES if has_model(run.model(n))]
    if names is None:
        if not present:
            raise CheckpointError(f"{run.root} holds neither student/ nor teacher/ (no {MODEL_CONFIG})")
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
    labels_file = run.label_names
    label_names = json.loads(labels_file.read_text(encoding="utf-8")) if labels_file.is_file() else None
    actor_options = {"num_cpus": settings.cpus_per_replica, "num_gpus": settings.gpus_per_replica}
    if args.sources:  # name -> (directory, precision, facts for /v1/models, tokenizer directory)
        entries = {name: (Path(src.model_dir), src.precision, {}, str(run.tokenizer))
                   for name, src in args.sources.items()}
    else:
        entries = {name: (run.model(name), settings.precision, model_facts(run, name), None)
                   for name in served_models(run, args.models)}
    models = {}
    for name, (model_dir, precision, facts, tokenizer_dir) in entries.items():
        if not has_model(model_dir):
            raise CheckpointError(f"cannot serve {name!r}: {model_dir} holds no model ({MODEL_CONFIG})")
        models[name] = Classifier.options(
            name=name, logging_config=_logging(settings),
            num_replicas=settings.num_replicas,
            max_ongoing_requests=model_ongoing_requests(settings),
            ray_actor_options=actor_options,
        ).bind(
            name,
            str(model_dir),
            max_batch_size=settings.max_batch_size,
            batch_wait_timeout_s=settings.batch_wait_timeout_s,
            max_length=cfg.tokenizer.max_length,
            threads=cfg.threads_per_worker,
            label_names=label_names,
            facts=facts,
            performance=cfg.performance.model_dump(),
            precision=precision,
            tokenizer_dir=tokenizer_dir,
        )
    gateway = Gateway.options(
        logging_config=_logging(settings),
        num_replicas=settings.gateway_replicas,
        max_ongoing_requests=max(GATEWAY_MIN_ONGOING, 4 * model_ongoing_requests(settings)),
        ray_actor_options={"num_cpus": settings.cpus_per_replica},
    )
    return gateway.bind(models, settings.model_dump(), token or None, str(run.root))


def _logging(settings: ServeConfig) -> dict[str, Any]:
    """Serve's logging for the proxy and every replica: per-request access lines only when
    ``serve.access_log`` asks (a line per request in every log is noise at load; measured, they
    cost no throughput that run-to-run noise does not hide: benchmarks/RESULTS.md)."""
    return {"enable_access_log": settings.access_log}


def _http_options(host: str, port: int, settings: ServeConfig) -> dict[str, Any]:
    """Serve's proxy: where it listens, and a timeout for any request stuck past the Gateway's."""
    return {"host": host, "port": port, "request_timeout_s": settings.request_timeout_s + PROXY_TIMEOUT_MARGIN_S}


def serve_config_yaml(
    run: RunDir, host: str | None, port: int | None, overrides: dict[str, Any], models: list[str] | None = None
) -> str:
    """A ``serve build``-style config, so ``serve deploy <file>`` runs this app on a cluster.
    ``host``/``port`` default to the run's serve settings (with ``overrides``)."""
    settings = serve_settings(load_config(run.config), overrides)
    config = {
        "proxy_location": "EveryNode",
        "http_options": _http_options(host or settings.host, port or settings.port, settings),
        "logging_config": _logging(settings),
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
    sources: dict[str, ModelSource] | None = None

    def model_count(self, run: RunDir) -> int:
        return len(self.sources) if self.sources else len(served_models(run, self.models))


def fit_free_cpus(run: RunDir, settings: ServeConfig, specs: list[AppSpec], log: Callable[[str], None]) -> list[AppSpec]:
    """The specs with ``cpus_per_replica`` scaled down when their replicas would not fit the
    free CPUs (the bench's three applications of four replicas on a 2-CPU machine). That number
    is Ray's accounting only: each replica still runs ``threads_per_worker`` torch threads, and
    the bench and the frontier load one model at a time, so the measurement does not change;
    without it the last application would wait forever for CPUs."""
    import ray

    replicas = sum(spec.model_count(run) + settings.gateway_replicas for spec in specs)
    free = float(ray.available_resources().get("CPU", 0.0))
    if not specs or replicas * settings.cpus_per_replica <= free:
        return specs
    share = round(0.95 * free / replicas, 3)
    if share <= 0:
        raise ResourceError(f"no free CPU for {replicas} Serve replicas; stop other work on the cluster")
    log(f"[serve] {replicas} replicas on {free:g} free CPUs: cpus_per_replica {share:g} for these "
        "applications (Ray's accounting; each replica keeps its torch threads)")
    return [dataclasses.replace(spec, overrides={**spec.overrides, "cpus_per_replica": share}) for spec in specs]


def deploy_many(
    run_dir: str | Path,
    specs: list[AppSpec],
    host: str | None = None,
    port: int | None = None,
    token: str | None = None,
) -> list[str]:
    """Deploy several applications of one run at once (their replicas start in parallel);
    return their base URLs. Arguments as in :func:`deploy`."""
    from raydistill.trainables.resources import Demand, preflight

    require_ray()
    run = RunDir.existing(run_dir)
    cfg = load_config(run.config)
    if token is None:
        token = os.environ.get(TOKEN_ENV, "")
    targets, demands = [], []
    for spec in specs:
        settings = serve_settings(cfg, spec.overrides)
        args = BuildArgs(run_dir=str(run.root), token=token, models=spec.models, sources=spec.sources,
                         **settings_overrides(spec.overrides))
        n_models = spec.model_count(run)
        demands += [
            Demand("CPU", settings.cpus_per_replica, n_models * settings.num_replicas + settings.gateway_replicas,
                   "serve.cpus_per_replica x (models x num_replicas + gateway_replicas)"),
            Demand("GPU", settings.gpus_per_replica, n_models * settings.num_replicas,
                   "serve.gpus_per_replica x models x serve.num_replicas"),
        ]
        targets.append(serve.RunTarget(build_app(args), name=spec.name, route_prefix=spec.route_prefix))
    # Ray would queue replicas that can never be placed and wait forever: fail with the settings.
    preflight("serve", demands, all_at_once=True)
    serve.start(http_options=_http_options(host or cfg.serve.host, port or cfg.serve.port, cfg.serve),
                logging_config=_logging(cfg.serve))
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
        atomic_write_text(run.serve_config, serve_config_yaml(run, host, port, overrides, models))
    return url


def shutdown(name: str | None = None) -> None:
    """Delete one application (``name``), or shut all of Serve down (``None``)."""
    if name is None:
        serve.shutdown()
    else:
        serve.delete(name)
