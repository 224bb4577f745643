"""int8 against fp32 on a run's exported teacher and student: speed, accuracy and the verdict.

For each model, the serving :class:`~raydistill.serve.predictor.Predictor` at fp32 and at int8
(:mod:`raydistill.platform.precision`) classifies the run's validation texts, length-sorted in
batches of ``--batch``, tokenizer included, on a fixed number of torch threads. After a warm-up
the two take turns every few batches (a shared machine's drift hits both alike); texts/s is the
median of ``--repeats`` passes over all the texts. From the first pass: each precision's
validation accuracy, how often int8 agrees with fp32, and int8 − fp32 with the report's 95%
paired cluster-bootstrap interval (films resampled where the run knows them) and verdict at the
run's ``report.margin``: equivalent, inconclusive or worse. Imports no Ray.

    python benchmarks/precision.py RUN_DIR                      # 2 threads, batch 32, 3 passes
    python benchmarks/precision.py RUN_DIR --threads 1 --batch 32 --repeats 5 --out /tmp/p.json

Writes the figures as JSON (``--out``, default ``benchmarks/results/precision-cpu.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from raydistill.platform.machine import cpu_name
from raydistill.platform.precision import full_range_activations
from raydistill.serve.predictor import Predictor

MODELS = ("student", "teacher")
PRECISIONS = ("fp32", "int8")


def validation_evidence(run_dir: Path) -> tuple[list[str], np.ndarray, np.ndarray | None, str, float, int]:
    """The run's validation texts, labels, cluster ids (None: rows), what a cluster is, the
    report's margin (a fraction) and the tokenizer's max_length."""
    from raydistill.platform.config import load_config
    from raydistill.platform.data import load_dataset
    from raydistill.platform.report.run_files import optional_array, optional_json
    from raydistill.platform.rundir import RunDir

    run = RunDir.existing(run_dir)
    cfg = load_config(run.config)
    texts = list(load_dataset(cfg.data).split("validation").texts)
    labels = np.load(run.eval_labels("validation"), allow_pickle=False)
    if len(labels) != len(texts):
        raise SystemExit(f"{len(labels)} validation labels in {run.labels} for {len(texts)} texts: "
                         "the data changed since the run")
    groups = optional_array(run.eval_groups("validation"))
    unit = (optional_json(run.clusters) or {}).get("unit", "cluster") if groups is not None else "rows"
    return texts, labels, groups, unit, cfg.report.margin_fraction, cfg.tokenizer.max_length


def timed_passes(predictors: dict[str, Predictor], texts: list[str], repeats: int,
                 slice_batches: int = 8) -> tuple[dict[str, np.ndarray], dict[str, list[float]]]:
    """(the first pass's logits, texts/s of every pass) per precision. A pass is the texts in
    length order, cut into slices of ``slice_batches`` batches; the precisions take turns slice
    by slice, so a shared machine's drift hits them alike."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    step = slice_batches * next(iter(predictors.values())).chunk_size
    slices = [order[i:i + step] for i in range(0, len(order), step)]
    for p in predictors.values():  # warm-up: kernels chosen, weights packed, caches filled
        p.logits([texts[i] for i in slices[len(slices) // 2]])
    logits = {name: np.zeros((len(texts), len(p.labels)), np.float32) for name, p in predictors.items()}
    speeds: dict[str, list[float]] = {name: [] for name in predictors}
    for repeat in range(repeats):
        seconds = dict.fromkeys(predictors, 0.0)
        for rows in slices:
            batch = [texts[i] for i in rows]
            for name, p in predictors.items():
                started = time.perf_counter()
                out = p.logits(batch)
                seconds[name] += time.perf_counter() - started
                if repeat == 0:
                    logits[name][rows] = out.numpy()
        for name in predictors:
            speeds[name].append(len(texts) / seconds[name])
    return logits, speeds


def compare(logits: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray | None,
            margin: float) -> dict[str, float | str]:
    """Accuracies, agreement, and int8 − fp32 with its interval and verdict (the report's)."""
    from raydistill.platform.metrics import correctness
    from raydistill.platform.report.bootstrap import paired_bootstrap
    from raydistill.platform.report.stats import verdict_of

    fp32, int8 = (correctness(logits[p], labels) for p in PRECISIONS)
    diff, low, high = paired_bootstrap(int8, fp32, groups=groups)
    return {"fp32_accuracy": float(fp32.mean()), "int8_accuracy": float(int8.mean()),
            "agreement": float((logits["int8"].argmax(1) == logits["fp32"].argmax(1)).mean()),
            "diff": diff, "ci_low": low, "ci_high": high,
            "verdict": verdict_of(False, high < 0, low, high, margin)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run with teacher/, student/ and labels/")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batch", type=int, default=32, help="texts per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the texts per precision")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "precision-cpu.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    texts, labels, groups, unit, margin, max_length = validation_evidence(args.run_dir)
    clusters = "rows" if groups is None else f"{len(np.unique(groups))} {unit}s"
    print(f"cpu {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch "
          f"{args.batch}; {len(texts)} validation texts in {clusters}; int8 activations "
          f"{'8' if full_range_activations() else '7'}-bit; margin {100 * margin:g} point(s)")
    print("| model | fp32 texts/s | int8 texts/s | int8/fp32 | fp32 acc | int8 acc | agreement "
          "| int8 − fp32 (95% CI), points | verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for model in args.models:
        predictors = {p: Predictor(args.run_dir / model, device="cpu", max_length=max_length,
                                   chunk_size=args.batch, precision=p) for p in PRECISIONS}
        logits, speeds = timed_passes(predictors, texts, args.repeats)
        del predictors
        speed = {p: statistics.median(s) for p, s in speeds.items()}
        row = {"model": model, **{f"{p}_texts_per_s": speed[p] for p in PRECISIONS},
               "speedup": speed["int8"] / speed["fp32"], "passes": speeds,
               **compare(logits, labels, groups, margin)}
        rows.append(row)
        print(f"| {model} | {speed['fp32']:.0f} | {speed['int8']:.0f} | {row['speedup']:.2f}x "
              f"| {row['fp32_accuracy']:.4f} | {row['int8_accuracy']:.4f} | {row['agreement']:.3f} "
              f"| {100 * row['diff']:+.2f} ({100 * row['ci_low']:+.2f} to {100 * row['ci_high']:+.2f}) "
              f"| {row['verdict']} |", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(args.run_dir.resolve()), "cpu": cpu_name(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "batch": args.batch, "repeats": args.repeats,
        "int8_activation_bits": 8 if full_range_activations() else 7, "texts": len(texts),
        "clusters": None if groups is None else len(np.unique(groups)), "unit": unit,
        "margin": margin, "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
