"""Sweep efficiency: trials/hour through the platform's Tune sweep vs the same trials one after
another in a plain loop, and the share of a Tune trial's time spent outside distillation.

Runs K trials of a finished run twice, in one invocation on the same machine:
(a) through ``run_sweep`` on a scratch copy of the run (the data shared through the object
    store, ``sweep.cpus_per_trial`` threads a trial, trials side by side, a checkpoint a pass);
(b) in a plain loop in this process, one trial after another at the same threads a trial, with
    the sweep's KD loop outside Ray (``benchmarks/student_recipe.py``).
Share outside distillation = 1 - (b)'s distillation seconds / (a)'s trial seconds, per trial:
model building, validation, checkpointing and Tune's own bookkeeping.

    python benchmarks/sweep_efficiency.py RUN_DIR [--strategies even top] [--seeds 0 1] [--temperature 4]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from student_recipe import distil, prepare


def tune_trials(run_dir: Path, overrides: list[str]) -> tuple[float, pd.DataFrame]:
    """(wall seconds, one row per trial) of the sweep's points on a scratch copy of the run."""
    from raydistill.pipeline import open_run
    from raydistill.session import ray_session
    from raydistill.platform.prepared import prepare_data
    from raydistill.platform.report import load_results
    from raydistill.trainables.sweep import run_sweep

    scratch = Path(tempfile.mkdtemp(prefix="sweep-efficiency-")) / run_dir.name
    scratch.mkdir()
    for name in ("teacher", "tokenizer", "al", "cache"):  # read only: linked
        (scratch / name).symlink_to((run_dir / name).resolve(), target_is_directory=True)
    for name in ("config.yaml", "meta.json", "manifest.json"):
        shutil.copy(run_dir / name, scratch / name)
    shutil.copytree(run_dir / "labels", scratch / "labels")
    teacher_only = {"teacher": json.loads((run_dir / "stages.json").read_text())["teacher"]}
    (scratch / "stages.json").write_text(json.dumps(teacher_only))  # the sweep is to run again
    try:
        run, cfg = open_run(scratch, overrides)
        labeled = teacher_only["teacher"]["labeled"]
        with ray_session():
            data = prepare_data(cfg, run)
            started = time.perf_counter()
            run_sweep(cfg, run, data, labeled)
            wall = time.perf_counter() - started
        return wall, load_results(run.root)
    finally:
        shutil.rmtree(scratch.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--strategies", nargs="+", default=["even", "top"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from raydistill.platform.config import load_config

    cfg = load_config(args.run_dir / "config.yaml")
    points = [(s, seed) for s in args.strategies for seed in args.seeds]
    overrides = [f"sweep.strategies=[{','.join(args.strategies)}]", f"sweep.seeds=[{','.join(map(str, args.seeds))}]",
                 f"sweep.temperatures=[{args.temperature}]"]
    tune_wall, trials = tune_trials(args.run_dir, overrides)

    threads = max(1, int(cfg.sweep.cpus_per_trial))
    torch.set_num_threads(threads)
    probe = prepare(args.run_dir, cfg.student.transfer_size)
    plain, started = {}, time.perf_counter()
    for strategy, seed in points:
        s = cfg.student
        plain[(strategy, seed)] = distil(probe, strategy, s.batch_size, s.lr, s.epochs, args.temperature,
                                         s.alpha, s.freeze_embeddings, seed)
    plain_wall = time.perf_counter() - started

    rows = []
    for _, trial in trials.iterrows():
        mine = plain[(trial["strategy"], int(trial["seed"]))]
        rows.append({"strategy": trial["strategy"], "seed": int(trial["seed"]),
                     "tune_trial_s": float(trial["time_total_s"]), "plain_distil_s": mine["train_s"],
                     "plain_trial_s": mine["seconds"], "tune_val_acc": float(trial["val_accuracy"]),
                     "plain_val_acc": mine["val_accuracy"],
                     "outside_distillation": 1 - mine["train_s"] / float(trial["time_total_s"])})
    n = len(points)
    figures = {
        "trials": n, "concurrent_in_tune": int(cfg.sweep.max_concurrent_trials or 0) or None,
        "threads_per_trial": threads,
        "tune_trials_per_hour": 3600 * n / tune_wall, "plain_trials_per_hour": 3600 * n / plain_wall,
        "share_outside_distillation_mean": sum(r["outside_distillation"] for r in rows) / len(rows),
    }
    figures["tune_vs_plain"] = figures["tune_trials_per_hour"] / figures["plain_trials_per_hour"]
    print("| trial | Tune trial s | plain distil s | outside distillation | val acc Tune / plain |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['strategy']} seed {r['seed']} | {r['tune_trial_s']:.1f} | {r['plain_distil_s']:.1f} | "
              f"{100 * r['outside_distillation']:.0f}% | {r['tune_val_acc']:.4f} / {r['plain_val_acc']:.4f} |")
    print(f"\nTune: {figures['tune_trials_per_hour']:.1f} trials/hour ({tune_wall:.0f} s for {n}); plain loop, "
          f"one at a time on {threads} thread(s): {figures['plain_trials_per_hour']:.1f} trials/hour "
          f"({plain_wall:.0f} s); Tune/plain {figures['tune_vs_plain']:.2f}x; a Tune trial spends "
          f"{100 * figures['share_outside_distillation_mean']:.0f}% of its time outside distillation")
    out = args.out or Path(__file__).parent / "results" / "sweep_efficiency-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "run": args.run_dir.name, **figures, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
