"""(b) and (c) of the serving benchmark: HTTP load through Ray Serve for each model, batched and
per-request (a second application with ``max_batch_size=1``), at each concurrency level and
texts-per-request setting."""

from __future__ import annotations

import itertools
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from raydistill.platform import logs
from raydistill.platform.config import BenchConfig, ExperimentConfig
from raydistill.platform.rundir import RunDir
from raydistill.serve import app as serve_app
from raydistill.platform.bench_format import split_key
from raydistill.serve.bench_report import fmt
from raydistill.serve.loadgen import run_load
from raydistill.serve.throughput import ratio

BENCH_APP = "raydistill-bench"
BASELINE_APP = "raydistill-baseline"
INT8_APP = "raydistill-int8"  # the student at int8, for the int8 series


@contextmanager
def serve_apps(
    run: RunDir, cfg: ExperimentConfig, base_url: str | None, baseline: bool, token: str | None,
    log: Callable[[str], None], int8: bool = False,
) -> Iterator[tuple[str, str | None, str | None]]:
    """Yields (batched URL, baseline URL or None, int8 URL or None); removes what it deployed,
    whatever happens.

    The baseline differs from the batched app only in ``max_batch_size=1``: same gateway,
    same replicas and resources, same ``max_ongoing_requests``; the int8 app only in serving
    the student at ``precision: int8``.
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
    if int8:
        specs.append(serve_app.AppSpec(name=INT8_APP, route_prefix="/int8", overrides={"precision": "int8"},
                                       models=["student"]))
    specs = serve_app.fit_free_cpus(run, settings, specs, log)
    serve_was_running = serve_app.serve_http_address() is not None
    try:
        if specs:
            log(f"[bench] deploying {', '.join(s.name for s in specs)} ...")
        urls = serve_app.deploy_many(run.root, specs, token=token or "") if specs else []
        by_name = dict(zip((s.name for s in specs), urls))
        yield base_url or by_name[BENCH_APP], by_name.get(BASELINE_APP), by_name.get(INT8_APP)
    finally:
        if not serve_was_running:
            serve.shutdown()
        else:
            for spec in specs:
                serve.delete(spec.name)


def measure_http(
    targets: dict[str, tuple[str, str]], bench: BenchConfig, texts: list[str],
    token: str | None, timeout_s: float, log: Callable[[str], None] = logs.log.info,
) -> list[dict[str, Any]]:
    """(b) and (c): each texts-per-request setting and concurrency level, each target
    (``<series>_<stack>`` -> (URL, model): batched, per-request, the int8 student),
    interleaved so slow drift of a shared machine hits every series alike."""
    rows = []
    for per_request, level in itertools.product(bench.texts_per_request, bench.concurrency):
        row: dict[str, Any] = {"concurrency": level, "texts_per_request": per_request}
        for key, (url, model) in targets.items():
            result = run_load(
                url, model, texts, level,
                max_requests=bench.requests_per_level, max_seconds=bench.seconds_per_level,
                texts_per_request=per_request, token=token, timeout_s=timeout_s,
                warmup_requests=min(level, 8),
            )
            row[key] = result
            log(f"[bench] http c={level:3d} x{per_request:<3d} {key:20s}: "
                f"{result['texts_per_s']:8.1f} texts/s p50 {fmt(result['p50_ms'])} "
                f"p99 {fmt(result['p99_ms'])} ms, errors {result['errors']}")
        teacher = row.get("teacher_batched", {}).get("texts_per_s")
        for key in targets:
            series, stack = split_key(key)
            if stack == "batched" and series != "teacher":
                row[f"{series}_vs_teacher"] = ratio(row[key]["texts_per_s"], teacher)
            if stack == "per_request":
                row[f"{series}_batched_vs_per_request"] = ratio(
                    row[f"{series}_batched"]["texts_per_s"], row[key]["texts_per_s"])
        rows.append(row)
    return rows
