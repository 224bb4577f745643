"""The serving benchmark: student vs teacher, batched vs per-request, in one run.

Three measurements, all in one process run so their ratios are comparable:

(a) in-process model throughput (no HTTP) at ``bench.batch_sizes``: texts/s, student/teacher;
(b) HTTP load through Serve at ``bench.concurrency`` levels for both models, once per
    ``bench.texts_per_request`` setting: req/s, texts/s, p50/p95/p99 latency, student/teacher
    ratio per level (1 text a request measures the HTTP stack's fixed per-request cost as much
    as the model; several texts a request measure the model through Serve);
(c) a per-request baseline: the same models behind the same HTTP stack with batching off
    (``max_batch_size=1``, a second application), so "batched vs per-request" is measured.

Writes ``bench.json``, ``bench.md`` and ``plots/bench.png`` in the run directory. Absolute
numbers depend on the machine (shared CPUs drift); compare the ratios.
"""

from __future__ import annotations

import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from raydistill.platform import logs
from raydistill.platform.config import BenchConfig, ExperimentConfig, load_config
from raydistill.platform.bench_format import series_name, target_key
from raydistill.platform.export import model_config
from raydistill.platform.machine import cpu_name
from raydistill.platform.rundir import PLOT_BENCH, RunDir
from raydistill.serve import app as serve_app
from raydistill.serve.bench_report import headline, summarize_bench, write_outputs
from raydistill.serve.http_bench import measure_http, serve_apps
from raydistill.serve.throughput import measure_in_process

MAX_BENCH_TEXTS = 2000

# Used when the run's data cannot be loaded here: short review-like sentences.
BUILTIN_TEXTS = [
    "A gripping, beautifully acted film that stays with you long after the credits.",
    "The plot is thin and the jokes fall flat.",
    "An uneven but often charming comedy with a terrific lead performance.",
    "Two hours of my life I will never get back.",
    "Smart, funny and surprisingly moving.",
    "The director seems to have no idea what story he wants to tell.",
    "A visual feast, even when the script stumbles.",
    "Tedious, overlong and oddly joyless.",
    "One of the most original thrillers in years.",
    "The cast does what it can with a clumsy, predictable screenplay.",
    "It is warm, wise and never sentimental.",
    "Neither scary nor funny, it just sits there.",
    "A small film with a big heart and a sharp sense of humour.",
    "The action scenes are loud, incoherent and endless.",
    "Quietly devastating, and worth every minute.",
    "By the halfway point I had stopped caring about anyone on screen.",
]


def bench_texts(
    run: RunDir, cfg: ExperimentConfig, log: Callable[[str], None] = logs.log.info
) -> tuple[list[str], str]:
    """Validation texts of the run's dataset when they can be loaded here, else built-in ones.

    Returns (texts, where they came from).
    """
    try:
        from raydistill.platform.data import load_dataset

        texts = [t for t in load_dataset(cfg.data).split("validation").texts if t.strip()]
        if texts:
            return texts[:MAX_BENCH_TEXTS], "validation split"
    except Exception as err:  # data not available on this machine: fall back, say so
        log(f"[bench] validation texts unavailable ({type(err).__name__}: {err}); "
            "using built-in sentences")
    return list(BUILTIN_TEXTS), "built-in sentences"


def machine_info() -> dict[str, Any]:
    """What the absolute numbers were measured on."""
    import ray
    import torch

    cpu = cpu_name()
    cuda = torch.cuda.is_available()
    return {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "device": "cuda" if cuda else "cpu",
        "torch": torch.__version__,
        "ray": ray.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_bench(
    run_dir: str | Path,
    cfg: BenchConfig | None = None,
    base_url: str | None = None,
    *,
    token: str | None = None,
    baseline: bool = True,
    log: Callable[[str], None] = logs.log.info,
) -> dict[str, Any]:
    """Benchmark a run's student and teacher; write bench.json, bench.md, plots/bench.png.

    ``cfg`` defaults to the run's ``bench`` section. ``base_url``: an already running gateway
    of this run on *this* Ray cluster's Serve (e.g. from ``raydistill serve``); without it, the
    batched app is deployed (``/bench``) and removed at the end. The per-request baseline
    (``baseline=True``) is deployed beside it (``/baseline``) and removed too; Serve is shut
    down afterwards only if it was not running before. ``token`` defaults to
    ``RAYDISTILL_API_TOKEN``. Returns what bench.json holds. Raises RaydistillError when not
    connected to Ray (call ``ray.init`` first), CheckpointError for a bad run directory.
    """
    serve_app.require_ray()
    run = RunDir.existing(run_dir)
    exp = load_config(run.config)
    bench = cfg or exp.bench
    token = token if token is not None else os.environ.get(serve_app.TOKEN_ENV) or None
    models = serve_app.served_models(run)
    int8 = bench.int8 and "student" in models
    series = {series_name(m, "fp32"): (m, "fp32") for m in models}
    if int8:
        series[series_name("student", "int8")] = ("student", "int8")
    texts, source = bench_texts(run, exp, log)
    log(f"[bench] {run.root}: {', '.join(series)}; {len(texts)} texts ({source})")
    started = time.perf_counter()
    in_process = measure_in_process(run, exp, bench, texts, series, log)
    settings = serve_app.serve_settings(exp)
    with serve_apps(run, exp, base_url, baseline, token, log, int8=int8) as (batched_url, baseline_url, int8_url):
        targets = {target_key(m, "batched"): (batched_url, m) for m in models}
        if baseline_url:
            targets |= {target_key(m, "per_request"): (baseline_url, m) for m in models}
        if int8_url:
            targets[target_key(series_name("student", "int8"), "batched")] = (int8_url, "student")
        http = measure_http(targets, bench, texts, token, settings.request_timeout_s, log)
    summary = summarize_bench(in_process, http, list(series))
    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": run.root.name,  # the run's own name: the file stays true when the run moves
        "machine": machine_info(),
        "bench": bench.model_dump(),
        "serve": {
            "max_batch_size": settings.max_batch_size,
            "batch_wait_timeout_s": settings.batch_wait_timeout_s,
            "max_ongoing_requests": serve_app.model_ongoing_requests(settings),
            "num_replicas": settings.num_replicas,
            "cpus_per_replica": settings.cpus_per_replica,
            "gpus_per_replica": settings.gpus_per_replica,
            "threads_per_replica": exp.threads_per_worker,
            "baseline_max_batch_size": 1 if baseline else None,
        },
        "models": _model_sizes(run, models),
        "series": {name: {"model": m, "precision": p} for name, (m, p) in series.items()},
        "texts": {"source": source, "count": len(texts)},
        "in_process": in_process,
        "http": http,
        "summary": summary,
        "headline": headline(summary, list(series)),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_outputs(run, result)
    for line in result["headline"]:
        log(f"[bench] {line}")
    log(f"[bench] wrote {run.bench_json}, {run.bench_md}, {run.plot(PLOT_BENCH)}")
    return result


def _model_sizes(run: RunDir, models: list[str]) -> dict[str, Any]:
    configs = {name: model_config(run.model(name)) for name in models}
    return {name: {"layers": c.get("num_hidden_layers"), "hidden_size": c.get("hidden_size")} for name, c in configs.items()}


