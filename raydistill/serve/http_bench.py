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
from raydistill.serve.bench_report import fmt
from raydistill.serve.loadgen import run_load
from raydistill.serve.throughput import ratio

BENCH_APP = "raydistill-bench"
BASELINE_APP = "raydistill-baseline"


@contextmanager
def serve_apps(
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
                    f"{result['texts_per_s']:8.1f} texts/s p50 {fmt(result['p50_ms'])} "
                    f"p99 {fmt(p99)} ms, errors {result['errors']}")
        row["student_vs_teacher"] = ratio(
            row.get("student_batched", {}).get("texts_per_s"),
            row.get("teacher_batched", {}).get("texts_per_s"),
        )
        if "per_request" in urls:
            for name in models:
                row[f"{name}_batched_vs_per_request"] = ratio(
                    row[f"{name}_batched"]["texts_per_s"], row[f"{name}_per_request"]["texts_per_s"]
                )
        rows.append(row)
    return rows
