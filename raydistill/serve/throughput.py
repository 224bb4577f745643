"""(a) of the serving benchmark: each model's in-process throughput (``Predictor.predict``, no
HTTP) at each batch size, the models taking turns call by call so a shared machine's drift hits
both alike."""

from __future__ import annotations

import math
import statistics
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from raydistill.platform import logs
from raydistill.platform.config import BenchConfig, ExperimentConfig
from raydistill.platform.rundir import RunDir
from raydistill.serve.predictor import Predictor


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or not math.isfinite(a) or not math.isfinite(b):
        return None
    return a / b


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """The replicas' thread count for the in-process measurement, restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def interleaved_timings(
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
    run: RunDir, cfg: ExperimentConfig, bench: BenchConfig, texts: list[str], series: dict[str, tuple[str, str]],
    log: Callable[[str], None] = logs.log.info,
) -> list[dict[str, Any]]:
    """(a) texts/s of each series' ``Predictor.predict`` at each batch size, no HTTP. ``series``
    maps a name to (model, precision).

    texts/s = batch size / median seconds per call; calls alternate between the models.
    """
    with torch_threads(cfg.threads_per_worker):
        predictors = {
            name: Predictor(run.model(model), max_length=cfg.tokenizer.max_length, precision=precision)
            for name, (model, precision) in series.items()
        }
        seconds = min(max(bench.seconds_per_level, 0.2), 10.0)
        rows = []
        for size in bench.batch_sizes:
            batch = [texts[i % len(texts)] for i in range(size)]
            most_texts = bench.requests_per_level * max(bench.texts_per_request)
            max_calls = max(20, math.ceil(most_texts / size))
            timings = interleaved_timings(predictors, batch, seconds, max_calls)
            row: dict[str, Any] = {"batch_size": size}
            for name, times in timings.items():
                median = statistics.median(times)
                row[name] = {"texts_per_s": size / median, "ms_per_batch": 1000 * median,
                             "calls": len(times)}
                log(f"[bench] in-process {name:12s} batch {size:4d}: "
                    f"{size / median:9.1f} texts/s ({1000 * median:.2f} ms/batch, {len(times)} calls)")
            for name in series:
                if name != "teacher":
                    row[f"{name}_vs_teacher"] = ratio(row[name]["texts_per_s"], row.get("teacher", {}).get("texts_per_s"))
            rows.append(row)
    return rows


