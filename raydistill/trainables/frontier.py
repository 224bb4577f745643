"""The depth frontier: how small and how fast a student can be, and for how many points.

``raydistill frontier RUN`` distils students of every depth 1..n-1 from the run's teacher (its
logit cache: no teacher pass) as Tune trials in their own experiment (``tune/frontier``, resumed
like the sweep), with one layer strategy that works at every depth, chosen from the run's own
strategy table. Each depth's accuracy (mean over its seeds) is compared with the teacher's by the
report's policy (cluster bootstrap, moderated seed variance, step-down, three verdicts at the
report's margin); each model is timed in process, fp32 and int8, the teacher included, taking
turns call by call, and then over HTTP: each in turn behind one Serve application, loaded with
``bench``'s largest concurrency and texts a request. The recommendation is the fastest model
whose accuracy is ``equivalent`` to the teacher's (an int8 model also has to be ``equivalent``
to its own fp32), else the fastest within ``--max-drop`` points. Writes ``frontier.csv``, ``frontier.md`` and ``plots/frontier.png``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from raydistill.platform import metrics as M
from raydistill.platform.config import ExperimentConfig
from raydistill.platform.errors import CheckpointError, ConfigError
from raydistill.platform.export import model_layers
from raydistill.platform.layers import teacher_layer_indices
from raydistill.platform.logs import log
from raydistill.platform.report import COMPLETED, analyse, load_results
from raydistill.platform.report.bootstrap import paired_bootstrap
from raydistill.platform.report.stats import CONFIDENCE, EQUIVALENT, VAL_ACC_MEAN, compare_with_best, verdict_of
from raydistill.platform.rundir import (
    FRONTIER_EXPERIMENT, PLOT_FRONTIER, RunDir, TrialDir, atomic_write_text, load_array,
    write_atomically,
)

UNIVERSAL = ("uniform", "bottom", "top", "even", "odd")  # rules that may work at any depth
MIN_SEEDS = 2
COLUMNS = ["model", "layers", "precision", "params", "seeds", M.VAL_ACCURACY, "diff_vs_teacher", "ci_low",
           "ci_high", "verdict", "int8_vs_fp32", "int8_verdict", "texts_per_s", "speedup", "http_texts_per_s",
           "http_speedup", "pareto", "recommended"]
FRONTIER_APP = "raydistill-frontier"


@dataclass(frozen=True)
class FrontierPlan:
    """What the frontier distils: one strategy and temperature at each depth, for each seed."""

    strategy: str
    temperature: float
    reason: str
    depths: list[int]
    seeds: list[int]

    def points(self, cfg: ExperimentConfig) -> list[dict[str, Any]]:
        return [{"strategy": self.strategy, "temperature": self.temperature, "seed": seed, "num_layers": k,
                 "alpha": cfg.student.alpha, "lr": cfg.student.lr} for k in self.depths for seed in self.seeds]


def plan_frontier(run: RunDir, cfg: ExperimentConfig, depths: Sequence[int] | None = None,
                  seeds: Sequence[int] | None = None) -> FrontierPlan:
    """The strategy with the best mean in the run's strategy table among those defined at every
    asked depth (``custom`` and ``random`` never are), at its best temperature. Raises
    ConfigError for depths outside 1..n-1 or fewer than two seeds, CheckpointError before a
    finished sweep."""
    n = model_layers(run.teacher)
    if n is None:
        raise CheckpointError(f"{run.teacher} holds no teacher: run the teacher stage first")
    depths = sorted(set(depths or range(1, n)))
    if not depths or depths[0] < 1 or depths[-1] >= n:
        raise ConfigError(f"depths must lie in 1..{n - 1} (the teacher has {n} layers), got {depths}")
    seeds = list(seeds if seeds is not None else cfg.sweep.seeds[:MIN_SEEDS])
    if len(set(seeds)) < MIN_SEEDS:
        raise ConfigError(f"the frontier needs at least {MIN_SEEDS} seeds a depth (its verdicts need the "
                          f"seed noise), got {seeds}")
    study = analyse(run.root)
    if study.cells.empty:
        raise CheckpointError(f"{run.root} has no finished sweep to choose the frontier's strategy from")
    ranked = (study.layer.strategies if study.layer is not None else study.cells).sort_values(
        VAL_ACC_MEAN, ascending=False)
    for strategy in ranked[M.STRATEGY]:
        if strategy in UNIVERSAL and _defined(strategy, n, depths):
            cells = study.cells[study.cells[M.STRATEGY] == strategy]
            temperature = float(cells.sort_values(VAL_ACC_MEAN, ascending=False)[M.TEMPERATURE].iloc[0])
            best = ranked[M.STRATEGY].iloc[0]
            why = ("the run's best strategy" if strategy == best else
                   f"the run's best strategy defined at every depth ({best} is not)")
            return FrontierPlan(strategy, temperature, f"{strategy} at T={temperature:g}: {why}", depths,
                                sorted(set(seeds)))
    raise ConfigError(f"none of the run's strategies ({', '.join(ranked[M.STRATEGY])}) is defined at depths "
                      f"{depths}; run a sweep with uniform or bottom")


def _defined(strategy: str, n: int, depths: Sequence[int]) -> bool:
    try:
        return all(teacher_layer_indices(strategy, n, k) is not None for k in depths)
    except ConfigError:
        return False


def run_frontier(cfg: ExperimentConfig, run: RunDir, data, labeled: list[int], plan: FrontierPlan,
                 resume: bool = False) -> int:
    """The plan's trials under ``tune/frontier`` (the sweep's machinery and resume)."""
    from raydistill.trainables.sweep import preflight_sweep, run_trials, shared_data

    preflight_sweep(cfg)
    log.info(f"[frontier] {plan.reason}; depths {plan.depths} x seeds {plan.seeds}")
    shared = shared_data(cfg, run, data, labeled, FRONTIER_EXPERIMENT)
    return run_trials(cfg, run, shared, plan.points(cfg), FRONTIER_EXPERIMENT, resume, command="frontier")


def depth_results(run: RunDir, cfg: ExperimentConfig) -> pd.DataFrame:
    """The frontier's completed trials, one row each, with its depth."""
    df = load_results(run.experiment(FRONTIER_EXPERIMENT), expected_epochs=cfg.student.epochs)
    return df[df["status"] == COMPLETED]


def frontier_table(run: RunDir, cfg: ExperimentConfig, texts: list[str], *, threads: int, batch_size: int,
                   seconds: float, margin: float) -> pd.DataFrame:
    """One row per model (the teacher, each depth; fp32 and int8): accuracy against the
    teacher's with the report's verdict, int8 against its fp32, and texts/s in process."""
    from raydistill.serve.predictor import Predictor
    from raydistill.serve.throughput import interleaved_timings, torch_threads

    done = depth_results(run, cfg)
    if done.empty:
        raise CheckpointError(f"{run.experiment(FRONTIER_EXPERIMENT)} has no finished trial: run the frontier first")
    labels = load_array(run.eval_labels("validation"))
    groups = load_array(run.eval_groups("validation")) if run.eval_groups("validation").is_file() else None
    teacher_correct = M.correctness(load_array(run.teacher_logits("validation")), labels)
    depths = sorted(int(k) for k in done[M.NUM_LAYERS].unique())
    by_depth = {k: done[done[M.NUM_LAYERS] == k].sort_values([M.VAL_ACCURACY, M.SEED], ascending=[False, True])
                for k in depths}
    correct = [teacher_correct[None, :]] + [
        np.stack([M.correctness(load_array(TrialDir(Path(d)).val_logits), labels) for d in by_depth[k]["trial_dir"]])
        for k in depths]
    comparison = compare_with_best([c.mean(axis=1) for c in correct], correct, best=0, groups=groups,
                                   unit="cluster" if groups is not None else "rows", margin=margin)
    models = {("teacher", model_layers(run.teacher)): run.teacher}
    # the depth's best-validation seed (rows come sorted), its last checkpoint
    models |= {("student", k): TrialDir(Path(by_depth[k]["trial_dir"].iloc[0])).last_model() for k in depths}
    rows = []
    with torch_threads(threads):
        predictors = {}
        for (kind, k), path in models.items():
            for precision in ("fp32", "int8"):
                predictors[(kind, k, precision)] = Predictor(
                    path, device="cpu", precision=precision, tokenizer_dir=run.tokenizer,  # checkpoints have none
                    max_length=cfg.tokenizer.max_length, chunk_size=batch_size)
        accuracy_int8 = {key: M.correctness(p.logits(texts).numpy(), labels)
                         for key, p in predictors.items() if key[2] == "int8"}
        batch = sorted(texts, key=len)[len(texts) // 2:][:batch_size]  # median-length texts
        timings = interleaved_timings(predictors, batch, seconds, max_calls=10_000)
    for (kind, k, precision), predictor in predictors.items():
        index = 0 if kind == "teacher" else 1 + depths.index(k)
        texts_per_s = batch_size / float(np.median(timings[(kind, k, precision)]))
        row = {"model": kind, "layers": k, "precision": precision, "params": predictor.num_parameters,
               "seeds": correct[index].shape[0], "texts_per_s": texts_per_s, "model_dir": str(predictor.model_dir)}
        if precision == "fp32":
            row.update({M.VAL_ACCURACY: float(correct[index].mean())}, diff_vs_teacher=float(comparison.diff[index]),
                       ci_low=float(comparison.ci_low[index]), ci_high=float(comparison.ci_high[index]),
                       verdict=comparison.verdict[index])
        else:
            fp32 = correct[index][0]  # the timed fp32 model: the teacher, or the depth's best seed
            mine = accuracy_int8[(kind, k, precision)]
            diff, low, high = paired_bootstrap(mine, fp32, groups=groups)
            row.update({M.VAL_ACCURACY: float(mine.mean())}, seeds=1, diff_vs_teacher=float(mine.mean() - teacher_correct.mean()),
                       int8_vs_fp32=diff, int8_verdict=verdict_of(False, high < 0, low, high, margin))
        rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS + ["model_dir"])
    table["speedup"] = _over_teacher(table, "texts_per_s")
    table["pareto"] = _pareto(table)
    return table.sort_values(["texts_per_s"], ascending=False).reset_index(drop=True)


def http_throughput(run: RunDir, cfg: ExperimentConfig, table: pd.DataFrame, texts: list[str]) -> pd.DataFrame:
    """The table with each model's texts/s over HTTP: each model (fp32 and int8) served in turn as
    the ``student`` of one Serve application (the Gateway and a batching Classifier, as
    ``raydistill serve`` runs them) and loaded at ``bench``'s largest concurrency and texts a
    request, within its per-level bounds; the application is removed after each."""
    from ray import serve

    from raydistill.serve import app as serve_app
    from raydistill.serve.loadgen import run_load

    clients, per_request = max(cfg.bench.concurrency), max(cfg.bench.texts_per_request)
    settings = serve_app.serve_settings(cfg)
    serve_was_running = serve_app.serve_http_address() is not None
    log.info(f"[frontier] {len(table)} models over HTTP in turn, {clients} clients x {per_request} texts a request")
    speeds = {}
    try:
        for i, r in table.iterrows():
            source = serve_app.ModelSource(model_dir=r["model_dir"], precision=r["precision"])
            spec = serve_app.AppSpec(name=FRONTIER_APP, route_prefix="/frontier", sources={"student": source})
            spec, = serve_app.fit_free_cpus(run, settings, [spec], log.info)
            url, = serve_app.deploy_many(run.root, [spec], token="")
            try:
                result = run_load(url, "student", texts, clients, max_requests=cfg.bench.requests_per_level,
                                  max_seconds=cfg.bench.seconds_per_level, texts_per_request=per_request,
                                  timeout_s=settings.request_timeout_s, warmup_requests=min(clients, 8))
            finally:
                serve.delete(FRONTIER_APP)
            speeds[i] = result["texts_per_s"] if result["ok"] else float("nan")
            log.info(f"[frontier] http {_name(r):28s}: {speeds[i]:8.1f} texts/s, errors {result['errors']} "
                     f"{result['outcomes'] if result['errors'] else ''}".rstrip())
    finally:
        if not serve_was_running:
            serve.shutdown()
    table = table.copy()
    table["http_texts_per_s"] = pd.Series(speeds)
    table["http_speedup"] = _over_teacher(table, "http_texts_per_s")
    return table


def _over_teacher(table: pd.DataFrame, column: str) -> pd.Series:
    """``column`` of every model as a multiple of the fp32 teacher's."""
    teacher = table[(table["model"] == "teacher") & (table["precision"] == "fp32")][column].iloc[0]
    return table[column] / teacher


def _pareto(table: pd.DataFrame) -> list[bool]:
    """Whether no other model is both faster and at least as accurate."""
    speed, acc = table["texts_per_s"].to_numpy(), table[M.VAL_ACCURACY].to_numpy()
    return [not np.any((speed > s) & (acc >= a)) for s, a in zip(speed, acc)]


def recommend(table: pd.DataFrame, max_drop_points: float | None = None) -> tuple[int | None, str]:
    """(row index, sentence): the fastest model equivalent to the teacher (an int8 one also to
    its fp32), else the fastest within ``max_drop_points`` of the teacher's accuracy."""
    fp32_verdict = {(r.model, r.layers): r.verdict for r in table.itertuples() if r.precision == "fp32"}
    eligible = [i for i, r in table.iterrows() if r["model"] == "student"
                and fp32_verdict.get((r["model"], r["layers"])) == EQUIVALENT
                and (r["precision"] == "fp32" or r["int8_verdict"] == EQUIVALENT)]
    if eligible:
        i = max(eligible, key=lambda j: table.at[j, "texts_per_s"])
        return i, (f"recommended: the {_name(table.loc[i])}, {table.at[i, 'speedup']:.2f}x the teacher's texts/s, "
                   f"its accuracy equivalent to the teacher's at the margin")
    if max_drop_points is not None:
        within = [i for i, r in table.iterrows() if r["diff_vs_teacher"] >= -max_drop_points / 100]
        if within:
            i = max(within, key=lambda j: table.at[j, "texts_per_s"])
            return i, (f"recommended: the {_name(table.loc[i])}, {table.at[i, 'speedup']:.2f}x the teacher's texts/s, "
                       f"{100 * table.at[i, 'diff_vs_teacher']:+.1f} points (within --max-drop {max_drop_points:g}); "
                       "no student is shown equivalent to the teacher")
    return None, ("no student is shown equivalent to the teacher at the margin; pass --max-drop POINTS to "
                  "choose the fastest within that many points")


def _name(row: pd.Series) -> str:
    return f"{row['layers']}-layer {row['model']} ({row['precision']})"


def write_frontier(run: RunDir, table: pd.DataFrame, plan: FrontierPlan, sentence: str, margin: float) -> None:
    """frontier.csv, frontier.md and plots/frontier.png."""
    atomic_write_text(run.frontier_csv, table.to_csv(index=False))
    lines = ["# The depth frontier", "", f"Strategy: {plan.reason}. Depths {plan.depths}, seeds {plan.seeds}; "
             f"accuracy on validation against the teacher's ({CONFIDENCE} intervals, margin "
             f"{100 * margin:g} point(s)); texts/s in process, the models taking turns, and over HTTP through "
             "one Serve application (empty with --no-http).", "",
             f"**{sentence}**", "",
             "| model | layers | precision | val acc | vs teacher, points | verdict | int8 vs fp32 | texts/s | x teacher "
             "| HTTP texts/s | x teacher |",
             "|" + "---|" * 11]
    for r in table.itertuples():
        interval = ("" if pd.isna(r.ci_low) else f" [{100 * r.ci_low:+.1f}, {100 * r.ci_high:+.1f}]")
        int8 = "" if pd.isna(r.int8_vs_fp32) else f"{100 * r.int8_vs_fp32:+.1f} ({r.int8_verdict})"
        lines.append(f"| {r.model} | {r.layers} | {r.precision} | {r.val_accuracy:.4f} | "
                     f"{100 * r.diff_vs_teacher:+.1f}{interval} | {'' if pd.isna(r.verdict) else r.verdict} | {int8} | "
                     f"{r.texts_per_s:,.0f} | {r.speedup:.2f} | {_maybe(r.http_texts_per_s, ',.0f')} | "
                     f"{_maybe(r.http_speedup, '.2f')} |")
    lines += ["", f"![accuracy against throughput](plots/{PLOT_FRONTIER})", ""]
    atomic_write_text(run.frontier_md, "\n".join(lines))
    plot_frontier(table, run.plot(PLOT_FRONTIER))


def _maybe(value: float, spec: str) -> str:
    return "" if pd.isna(value) else format(value, spec)


def plot_frontier(table: pd.DataFrame, path: Path) -> None:
    """Validation accuracy against texts/s, fp32 and int8, the Pareto front joined."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (model, precision), part in table.groupby(["model", "precision"]):
        marker = "*" if model == "teacher" else ("o" if precision == "fp32" else "s")
        ax.scatter(part["texts_per_s"], 100 * part[M.VAL_ACCURACY], marker=marker, s=90 if model == "teacher" else 45,
                   label=f"{model} {precision}")
        for r in part.itertuples():
            ax.annotate(f"{r.layers}", (r.texts_per_s, 100 * r.val_accuracy), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    front = table[table["pareto"]].sort_values("texts_per_s")
    ax.plot(front["texts_per_s"], 100 * front[M.VAL_ACCURACY], "k--", lw=0.8, label="Pareto front")
    if table["recommended"].any():
        best = table[table["recommended"]].iloc[0]
        ax.scatter([best["texts_per_s"]], [100 * best[M.VAL_ACCURACY]], s=250, facecolors="none",
                   edgecolors="red", label="recommended")
    ax.set_xscale("log")
    ax.set(xlabel="texts/s in process (log)", ylabel="validation accuracy, %",
           title="Students of every depth against the teacher (labels: layers)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def frontier(cfg: ExperimentConfig, run: RunDir, data, labeled: list[int], *, depths: Sequence[int] | None = None,
             seeds: Sequence[int] | None = None, max_drop_points: float | None = None, resume: bool = False,
             threads: int = 2, batch_size: int = 32, seconds: float = 30.0, http: bool = True) -> dict[str, Any]:
    """The whole command: plan, trials, table (over HTTP too unless ``http=False``),
    recommendation, files. Returns the summary."""
    plan = plan_frontier(run, cfg, depths, seeds)
    run_frontier(cfg, run, data, labeled, plan, resume=resume)
    texts = [t for t in data.dataset.split("validation").texts]
    margin = cfg.report.margin_fraction
    table = frontier_table(run, cfg, texts, threads=threads, batch_size=batch_size, seconds=seconds, margin=margin)
    if http:
        table = http_throughput(run, cfg, table, texts)
    table = table.drop(columns="model_dir")
    index, sentence = recommend(table, max_drop_points)
    table["recommended"] = [i == index for i in range(len(table))]
    write_frontier(run, table, plan, sentence, margin)
    log.info(f"[frontier] {sentence}")
    return {"plan": plan, "table": table, "recommendation": sentence}
