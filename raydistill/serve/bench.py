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

import itertools
import math
import os
import platform
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from raydistill.platform import logs
from raydistill.platform.config import BenchConfig, ExperimentConfig, load_config
from raydistill.platform.machine import cpu_name
from raydistill.platform.rundir import RunDir, atomic_write_json, atomic_write_text, json_safe
from raydistill.serve import app as serve_app
from raydistill.serve.loadgen import run_load
from raydistill.serve.predictor import Predictor

BENCH_APP = "raydistill-bench"
BASELINE_APP = "raydistill-baseline"
BENCH_PLOT = "bench.png"
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


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or not math.isfinite(a) or not math.isfinite(b):
        return None
    return a / b


# ----------------------------------------------------------------------------- (a) in process


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """The replicas' thread count for the in-process measurement, restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _interleaved_timings(
    predictors: dict[str, Any], batch: list[str], seconds: float, max_calls: int
) -> dict[str, list[float]]:
    """Seconds per ``predict(batch)`` call, the models taking turns call by call, so a shared
    machine's drift hits both alike."""
    for predictor in predictors.values():
        predictor.predict(batch)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in predictors}
    started = time.perf_counter()
    while True:
        for name, predictor in predictors.items():
            t0 = time.perf_counter()
            predictor.predict(batch)
            times[name].append(time.perf_counter() - t0)
        calls = len(next(iter(times.values())))
        if calls >= max_calls or time.perf_counter() - started >= seconds:
            return times


def measure_in_process(
    run: RunDir, cfg: ExperimentConfig, bench: BenchConfig, texts: list[str], models: list[str],
    log: Callable[[str], None] = logs.log.info,
) -> list[dict[str, Any]]:
    """(a) texts/s of each model's ``Predictor.predict`` at each batch size, no HTTP.

    texts/s = batch size / median seconds per call; calls alternate between the models.
    """
    import statistics

    with _torch_threads(cfg.threads_per_worker):
        predictors = {
            name: Predictor(run.root / name, max_length=cfg.tokenizer.max_length)
            for name in models
        }
        seconds = min(max(bench.seconds_per_level, 0.2), 10.0)
        rows = []
        for size in bench.batch_sizes:
            batch = [texts[i % len(texts)] for i in range(size)]
            most_texts = bench.requests_per_level * max(bench.texts_per_request)
            max_calls = max(20, math.ceil(most_texts / size))
            timings = _interleaved_timings(predictors, batch, seconds, max_calls)
            row: dict[str, Any] = {"batch_size": size}
            for name, times in timings.items():
                median = statistics.median(times)
                row[name] = {"texts_per_s": size / median, "ms_per_batch": 1000 * median,
                             "calls": len(times)}
                log(f"[bench] in-process {name:7s} batch {size:4d}: "
                    f"{size / median:9.1f} texts/s ({1000 * median:.2f} ms/batch, {len(times)} calls)")
            row["student_vs_teacher"] = _ratio(
                row.get("student", {}).get("texts_per_s"), row.get("teacher", {}).get("texts_per_s")
            )
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- (b), (c) over HTTP


@contextmanager
def _serve_apps(
    run: RunDir, cfg: ExperimentConfig, base_url: str | None, baseline: bool, token: str | None,
    log: Callable[[str], None],
) -> Iterator[tuple[str, str | None]]:
    """Yields (batched URL, baseline URL or None); removes what it deployed, whatever happens.

    The baseline differs from the batched app only in ``max_batch_size=1``: same gateway,
    same replicas and resources, same ``max_ongoing_requests``.
    """
    from ray import serve

    settings = serve_app.serve_settings(cfg)
    specs = []
    if base_url is None:
        specs.append(serve_app.AppSpec(name=BENCH_APP, route_prefix="/bench"))
    if baseline:
        same_ongoing = serve_app.model_ongoing_requests(settings)
        specs.append(serve_app.AppSpec(
            name=BASELINE_APP, route_prefix="/baseline",
            overrides={"max_batch_size": 1, "max_ongoing_requests": same_ongoing},
        ))
    serve_was_running = serve_app.serve_http_address() is not None
    try:
        if specs:
            log(f"[bench] deploying {', '.join(s.name for s in specs)} ...")
        urls = serve_app.deploy_many(run.root, specs, token=token or "") if specs else []
        by_name = dict(zip((s.name for s in specs), urls))
        yield base_url or by_name[BENCH_APP], by_name.get(BASELINE_APP)
    finally:
        if not serve_was_running:
            serve.shutdown()
        else:
            for spec in specs:
                serve.delete(spec.name)


def measure_http(
    urls: dict[str, str], models: list[str], bench: BenchConfig, texts: list[str],
    token: str | None, timeout_s: float, log: Callable[[str], None] = logs.log.info,
) -> list[dict[str, Any]]:
    """(b) and (c): each texts-per-request setting and concurrency level, each model, each
    stack (batched / per-request), interleaved so slow drift of a shared machine hits every
    series alike."""
    rows = []
    for per_request, level in itertools.product(bench.texts_per_request, bench.concurrency):
        row: dict[str, Any] = {"concurrency": level, "texts_per_request": per_request}
        for name in models:
            for stack, url in urls.items():
                result = run_load(
                    url, name, texts, level,
                    max_requests=bench.requests_per_level, max_seconds=bench.seconds_per_level,
                    texts_per_request=per_request, token=token, timeout_s=timeout_s,
                    warmup_requests=min(level, 8),
                )
                row[f"{name}_{stack}"] = result
                p99 = result["p99_ms"]
                log(f"[bench] http c={level:3d} x{per_request:<3d} {name:7s} {stack:11s}: "
                    f"{result['texts_per_s']:8.1f} texts/s p50 {_fmt(result['p50_ms'])} "
                    f"p99 {_fmt(p99)} ms, errors {result['errors']}")
        row["student_vs_teacher"] = _ratio(
            row.get("student_batched", {}).get("texts_per_s"),
            row.get("teacher_batched", {}).get("texts_per_s"),
        )
        if "per_request" in urls:
            for name in models:
                row[f"{name}_batched_vs_per_request"] = _ratio(
                    row[f"{name}_batched"]["texts_per_s"], row[f"{name}_per_request"]["texts_per_s"]
                )
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the whole benchmark


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
    texts, source = bench_texts(run, exp, log)
    log(f"[bench] {run.root}: models {models}, {len(texts)} texts ({source})")
    started = time.perf_counter()
    in_process = measure_in_process(run, exp, bench, texts, models, log)
    settings = serve_app.serve_settings(exp)
    with _serve_apps(run, exp, base_url, baseline, token, log) as (batched_url, baseline_url):
        urls = {"batched": batched_url} | ({"per_request": baseline_url} if baseline_url else {})
        http = measure_http(urls, models, bench, texts, token, settings.request_timeout_s, log)
    summary = _summary(in_process, http, models)
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
        "texts": {"source": source, "count": len(texts)},
        "in_process": in_process,
        "http": http,
        "summary": summary,
        "headline": headline(summary, models),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_outputs(run, result)
    for line in result["headline"]:
        log(f"[bench] {line}")
    log(f"[bench] wrote {run.bench_json}, {run.bench_md}, {run.plots / BENCH_PLOT}")
    return result


def _model_sizes(run: RunDir, models: list[str]) -> dict[str, Any]:
    import json

    out = {}
    for name in models:
        config = json.loads((run.root / name / "config.json").read_text(encoding="utf-8"))
        out[name] = {"layers": config.get("num_hidden_layers"), "hidden_size": config.get("hidden_size")}
    return out


def _summary(
    in_process: list[dict[str, Any]], http: list[dict[str, Any]], models: list[str]
) -> dict[str, Any]:
    """The headline ratios: in process at the largest batch size; over HTTP at the highest
    concurrency, once per texts-per-request setting, with what Serve keeps of the in-process
    figures (each model's best batched texts/s over the levels, and the student/teacher ratio)."""
    top_batch = in_process[-1]
    top_level = max(row["concurrency"] for row in http)
    summary: dict[str, Any] = {
        "in_process_batch_size": top_batch["batch_size"],
        "in_process_student_vs_teacher": top_batch["student_vs_teacher"],
        "http_concurrency": top_level,
        "http": [],
    }
    for row in http:
        if row["concurrency"] != top_level:
            continue
        per_request = row["texts_per_request"]
        entry = {
            "texts_per_request": per_request,
            "student_vs_teacher": row["student_vs_teacher"],
            "share_of_in_process_ratio": _ratio(row["student_vs_teacher"],
                                                top_batch["student_vs_teacher"]),
        }
        for name in models:
            best = max(r[f"{name}_batched"]["texts_per_s"] for r in http
                       if r["texts_per_request"] == per_request)
            entry[f"{name}_share_of_in_process"] = _ratio(best, top_batch[name]["texts_per_s"])
            key = f"{name}_batched_vs_per_request"
            if key in row:
                entry[key] = row[key]
        summary["http"].append(entry)
    return summary


def _texts(n: int) -> str:
    return f"{n} text{'s' if n != 1 else ''}"


def headline(summary: dict[str, Any], models: list[str]) -> list[str]:
    """The ratios worth reading, one sentence each (bench.md, and what the CLI prints)."""
    lines = [
        f"in process, batch {summary['in_process_batch_size']}: student/teacher throughput "
        f"{_fmt(summary['in_process_student_vs_teacher'], 2)}x",
    ]
    for entry in summary["http"]:
        level = f"over HTTP, {summary['http_concurrency']} clients x {_texts(entry['texts_per_request'])} a request"
        share = entry["share_of_in_process_ratio"]
        kept = ", ".join(f"{name} {_pct(entry[f'{name}_share_of_in_process'])}" for name in models)
        lines.append(f"{level}: student/teacher throughput {_fmt(entry['student_vs_teacher'], 2)}x "
                     f"({_pct(share)} of the in-process ratio); texts/s kept from in process: {kept}")
        batched = [f"{name} {_fmt(entry[f'{name}_batched_vs_per_request'], 2)}x" for name in models
                   if entry.get(f"{name}_batched_vs_per_request") is not None]
        if batched:
            lines.append(f"{level}: batched/per-request throughput {', '.join(batched)}")
    return lines


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def write_outputs(run: RunDir, result: dict[str, Any]) -> None:
    """bench.json, bench.md and plots/bench.png (each written atomically)."""
    atomic_write_json(run.bench_json, json_safe(result))
    atomic_write_text(run.bench_md, bench_markdown(result))
    plot_bench(result, run.plots / BENCH_PLOT)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def bench_markdown(result: dict[str, Any]) -> str:
    """bench.md: the machine, the settings, the headline ratios, then every table."""
    m, s, b = result["machine"], result["serve"], result["bench"]
    models = list(result["models"])
    gpu = f" ({m['gpu']})" if m["gpu"] else ""
    lines = [
        "# Serving benchmark",
        "",
        f"Run `{result['run_dir']}`, {result['created']}. Texts: {result['texts']['count']} "
        f"({result['texts']['source']}); per request: {', '.join(_texts(n) for n in b['texts_per_request'])}.",
        "",
        f"Machine: {m['cpu']}, {m['cpu_cores']} cores ({m['cpus_usable']} usable), device "
        f"{m['device']}{gpu}; torch {m['torch']}, Ray {m['ray']}, Python {m['python']}.",
        "",
        f"Serve: max_batch_size {s['max_batch_size']}, batch_wait_timeout_s "
        f"{s['batch_wait_timeout_s']}, max_ongoing_requests {s['max_ongoing_requests']}, "
        f"{s['num_replicas']} replica(s) per model with {s['cpus_per_replica']} CPU / "
        f"{s['gpus_per_replica']} GPU and {s['threads_per_replica']} torch thread(s). "
        f"Levels: at most {b['requests_per_level']} requests or {b['seconds_per_level']} s each.",
        "",
        "Absolute figures are this machine's (shared CPUs drift); compare the **ratios**, each "
        "measured within this one run.",
        "",
        "## Headline",
        "",
    ]
    lines += [f"- {line}" for line in result["headline"]]

    lines += ["", "## (a) In-process throughput (no HTTP)", "",
              "Median time per `predict(batch)` call; the models take turns call by call.", ""]
    header = ["batch"] + [f"{n} {col}" for n in models for col in ("texts/s", "ms/batch")]
    rows = [[row["batch_size"]]
            + [_fmt(row[n][k], d) for n in models for k, d in (("texts_per_s", 1), ("ms_per_batch", 2))]
            + [_fmt(row["student_vs_teacher"], 2)]
            for row in result["in_process"]]
    lines += _table(header + ["student/teacher"], rows)

    lines += ["", "## (b, c) HTTP through Ray Serve", ""]
    rows = []
    for row in result["http"]:
        for name in models:
            for stack in ("batched", "per_request"):
                if (r := row.get(f"{name}_{stack}")) is not None:
                    rows.append([row["texts_per_request"], row["concurrency"], name,
                                 stack.replace("_", "-"), _fmt(r["req_per_s"]),
                                 _fmt(r["texts_per_s"]), _fmt(r["p50_ms"]), _fmt(r["p95_ms"]),
                                 _fmt(r["p99_ms"]), r["errors"]])
    lines += _table(["texts/request", "concurrency", "model", "stack", "req/s", "texts/s", "p50 ms",
                     "p95 ms", "p99 ms", "errors"], rows)

    lines += ["", "Ratios per level (texts/s):", ""]
    rows = [[row["texts_per_request"], row["concurrency"], _fmt(row["student_vs_teacher"], 2)]
            + [_fmt(row.get(f"{n}_batched_vs_per_request"), 2) for n in models]
            for row in result["http"]]
    lines += _table(["texts/request", "concurrency", "student/teacher (batched)"]
                    + [f"{n} batched/per-request" for n in models], rows)
    lines += ["", "Where a request's time goes (mean ms per answered request; the Gateway's "
              "`Server-Timing`): the client's whole request; within it Serve's proxy and the "
              "socket (client minus Gateway); the Gateway's own work (parsing, checks, the "
              "response); the model call (the handle hop, the batch wait, tokenising, the forward "
              "pass). Compare the model call with (a)'s time per batch.", ""]
    lines += _table(["texts/request", "concurrency", "model", "stack", "client", "proxy + socket",
                     "gateway", "model call"], latency_breakdown(result["http"], models))
    lines += ["", f"![throughput and p99 latency](plots/{BENCH_PLOT})", ""]
    return "\n".join(lines)


def latency_breakdown(http: list[dict[str, Any]], models: list[str]) -> list[list[Any]]:
    """One row per HTTP level, model and stack: client, proxy + socket, Gateway, model call (ms)."""
    rows = []
    for row in http:
        for name in models:
            for stack in ("batched", "per_request"):
                r = row.get(f"{name}_{stack}")
                if r is None or r.get("server_gateway_ms") is None or r.get("mean_ms") is None:
                    continue
                gateway, model = r["server_gateway_ms"], r.get("server_model_ms")
                rows.append([row["texts_per_request"], row["concurrency"], name, stack.replace("_", "-"),
                             _fmt(r["mean_ms"]), _fmt(r["mean_ms"] - gateway),
                             _fmt(gateway - model if model is not None else None), _fmt(model)])
    return rows


def plot_bench(result: dict[str, Any], path: Path) -> None:
    """Three panels: in-process texts/s vs batch size; HTTP texts/s and p99 vs concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator, ScalarFormatter

    models = list(result["models"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    sizes = [row["batch_size"] for row in result["in_process"]]
    for name in models:
        axes[0].plot(sizes, [row[name]["texts_per_s"] for row in result["in_process"]], "o-", label=name)
    axes[0].set(xscale="log", ylim=(0, None), xlabel="batch size", ylabel="texts/s",
                title="(a) in process, no HTTP")
    levels = sorted({row["concurrency"] for row in result["http"]})
    settings = sorted({row["texts_per_request"] for row in result["http"]})
    for name, per_request in itertools.product(models, settings):
        series = [row for row in result["http"] if row["texts_per_request"] == per_request]
        for stack, style in (("batched", "o-"), ("per_request", "s--")):
            key = f"{name}_{stack}"
            if key not in series[0]:
                continue
            label = f"{name}, {stack.replace('_', '-')}, {_texts(per_request)}/request"
            x = [row["concurrency"] for row in series]
            axes[1].plot(x, [row[key]["texts_per_s"] for row in series], style, label=label)
            p99 = [row[key]["p99_ms"] for row in series]
            axes[2].plot(x, [math.nan if v is None else v for v in p99], style, label=label)
    axes[1].set(xscale="log", ylim=(0, None), xlabel="concurrent clients", ylabel="texts/s",
                title="(b, c) HTTP throughput")
    axes[2].set(xscale="log", ylim=(0, None), xlabel="concurrent clients",
                ylabel="p99 latency (ms)", title="(b, c) HTTP p99")
    for ax, ticks in zip(axes, (sizes, levels, levels)):
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    # The HTTP panels share one legend below them: eight series inside a panel covered the lines.
    handles, labels = axes[1].get_legend_handles_labels()
    rows = max(1, math.ceil(len(labels) / 4))
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    machine = result["machine"]
    fig.suptitle(f"{machine['cpu']} ({machine['cpu_cores']} cores, {machine['device']})", fontsize=9)
    fig.tight_layout(rect=(0, 0.05 * rows + 0.02, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)

