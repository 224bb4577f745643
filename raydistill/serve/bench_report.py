"""The serving benchmark's outputs: the headline ratios, ``bench.md``, ``plots/bench.png`` and
``bench.json``, from the result :func:`raydistill.serve.bench.run_bench` assembles."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from raydistill.platform.rundir import PLOT_BENCH, RunDir, atomic_write_json, atomic_write_text, json_safe, write_atomically
from raydistill.platform.bench_format import series_of, target_key
from raydistill.serve.throughput import ratio


def summarize_bench(
    in_process: list[dict[str, Any]], http: list[dict[str, Any]], series: list[str]
) -> dict[str, Any]:
    """The headline ratios: in process at the largest batch size; over HTTP at the highest
    concurrency, once per texts-per-request setting, with what Serve keeps of the in-process
    figures (each series' best batched texts/s over the levels, and the ratios to the teacher)."""
    top_batch = in_process[-1]
    top_level = max(row["concurrency"] for row in http)
    others = [name for name in series if name != "teacher"]
    summary: dict[str, Any] = {
        "in_process_batch_size": top_batch["batch_size"],
        **{f"in_process_{name}_vs_teacher": top_batch.get(f"{name}_vs_teacher") for name in others},
        "http_concurrency": top_level,
        "http": [],
    }
    for row in http:
        if row["concurrency"] != top_level:
            continue
        per_request = row["texts_per_request"]
        entry: dict[str, Any] = {"texts_per_request": per_request}
        for name in others:
            entry[f"{name}_vs_teacher"] = row.get(f"{name}_vs_teacher")
            entry[f"{name}_share_of_in_process_ratio"] = ratio(row.get(f"{name}_vs_teacher"),
                                                               top_batch.get(f"{name}_vs_teacher"))
        for name in series:
            best = max(r[target_key(name, "batched")]["texts_per_s"] for r in http
                       if r["texts_per_request"] == per_request)
            entry[f"{name}_share_of_in_process"] = ratio(best, top_batch[name]["texts_per_s"])
            key = f"{name}_batched_vs_per_request"
            if key in row:
                entry[key] = row[key]
        summary["http"].append(entry)
    return summary


def _texts(n: int) -> str:
    return f"{n} text{'s' if n != 1 else ''}"


def _label(name: str) -> str:
    """``student_int8`` -> ``int8 student`` (fp32 series keep their name)."""
    model, _, precision = name.partition("_")
    return f"{precision} {model}" if precision else model


def headline(summary: dict[str, Any], series: list[str]) -> list[str]:
    """The ratios worth reading, one sentence each (bench.md, and what the CLI prints)."""
    others = [name for name in series if name != "teacher"]
    ratios = ", ".join(f"{_label(n)}/teacher {fmt(summary.get(f'in_process_{n}_vs_teacher'), 2)}x" for n in others)
    lines = [f"in process, batch {summary['in_process_batch_size']}: throughput {ratios}"]
    for entry in summary["http"]:
        level = f"over HTTP, {summary['http_concurrency']} clients x {_texts(entry['texts_per_request'])} a request"
        ratios = ", ".join(f"{_label(n)}/teacher {fmt(entry.get(f'{n}_vs_teacher'), 2)}x "
                           f"({pct(entry.get(f'{n}_share_of_in_process_ratio'))} of the in-process ratio)"
                           for n in others)
        kept = ", ".join(f"{_label(n)} {pct(entry[f'{n}_share_of_in_process'])}" for n in series)
        lines.append(f"{level}: throughput {ratios}; texts/s kept from in process: {kept}")
        batched = [f"{_label(n)} {fmt(entry[f'{n}_batched_vs_per_request'], 2)}x" for n in series
                   if entry.get(f"{n}_batched_vs_per_request") is not None]
        if batched:
            lines.append(f"{level}: batched/per-request throughput {', '.join(batched)}")
    return lines


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def write_outputs(run: RunDir, result: dict[str, Any]) -> None:
    """bench.json, bench.md and plots/bench.png (each written atomically)."""
    atomic_write_json(run.bench_json, json_safe(result))
    atomic_write_text(run.bench_md, bench_markdown(result))
    plot_bench(result, run.plot(PLOT_BENCH))


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def bench_markdown(result: dict[str, Any]) -> str:
    """bench.md: the machine, the settings, the headline ratios, then every table."""
    m, s, b = result["machine"], result["serve"], result["bench"]
    models = series_of(result)
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
            + [fmt(row[n][k], d) for n in models for k, d in (("texts_per_s", 1), ("ms_per_batch", 2))]
            + [fmt(row["student_vs_teacher"], 2)]
            for row in result["in_process"]]
    lines += _table(header + ["student/teacher"], rows)

    lines += ["", "## (b, c) HTTP through Ray Serve", ""]
    rows = []
    for row in result["http"]:
        for name in models:
            for stack in ("batched", "per_request"):
                if (r := row.get(f"{name}_{stack}")) is not None:
                    rows.append([row["texts_per_request"], row["concurrency"], name,
                                 stack.replace("_", "-"), fmt(r["req_per_s"]),
                                 fmt(r["texts_per_s"]), fmt(r["p50_ms"]), fmt(r["p95_ms"]),
                                 fmt(r["p99_ms"]), r["errors"]])
    lines += _table(["texts/request", "concurrency", "model", "stack", "req/s", "texts/s", "p50 ms",
                     "p95 ms", "p99 ms", "errors"], rows)

    lines += ["", "Ratios per level (texts/s):", ""]
    others = [n for n in models if n != "teacher"]
    per_request = [n for n in models if any(f"{n}_batched_vs_per_request" in row for row in result["http"])]
    rows = [[row["texts_per_request"], row["concurrency"]]
            + [fmt(row.get(f"{n}_vs_teacher"), 2) for n in others]
            + [fmt(row.get(f"{n}_batched_vs_per_request"), 2) for n in per_request]
            for row in result["http"]]
    lines += _table(["texts/request", "concurrency"] + [f"{_label(n)}/teacher (batched)" for n in others]
                    + [f"{_label(n)} batched/per-request" for n in per_request], rows)
    lines += ["", "Where a request's time goes (mean ms per answered request; the Gateway's "
              "`Server-Timing`): the client's whole request; within it Serve's proxy and the "
              "socket (client minus Gateway); the Gateway's own work (parsing, checks, the "
              "response); the model call (the handle hop, the batch wait, tokenising, the forward "
              "pass). Compare the model call with (a)'s time per batch.", ""]
    lines += _table(["texts/request", "concurrency", "model", "stack", "client", "proxy + socket",
                     "gateway", "model call"], latency_breakdown(result["http"], models))
    lines += ["", f"![throughput and p99 latency](plots/{PLOT_BENCH})", ""]
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
                             fmt(r["mean_ms"]), fmt(r["mean_ms"] - gateway),
                             fmt(gateway - model if model is not None else None), fmt(model)])
    return rows


def plot_bench(result: dict[str, Any], path: Path) -> None:
    """Three panels: in-process texts/s vs batch size; HTTP texts/s and p99 vs concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator, ScalarFormatter

    models = series_of(result)
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
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)

