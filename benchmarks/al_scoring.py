"""Pool scoring: texts/s against the number of scorers, and each process's peak memory while the
pool grows.

Measured in one run, on the run's teacher and its own tokenised pool:

* **throughput**: ``ActiveLearner.acquire`` with 1..N scorers on the run's pool, in steady
  state (the first round starts the scorers and is timed apart), as ratios to plain batched
  inference in this process on 1 thread and on as many threads as scorers;
* **memory**: the same round on the pool and on the pool tiled ``--scale`` times, with the peak
  resident memory over the round of the driver (this process), the ActiveLearner and each
  Scorer, read from the kernel's high-water mark (``VmHWM``, reset before the round). The pool is
  read in shards from its memory-mapped cache, so no process should grow with it.

    python benchmarks/al_scoring.py RUN_DIR [--scorers 1 2] [--scale 10] [--out FILE.json]

RUN_DIR is a run whose teacher stage finished (``raydistill teacher``, or a whole ``raydistill run``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from raydistill.platform.machine import cpu_name


def peak_rss_mb(_actor=None) -> float:
    """This process's peak resident memory since the last :func:`reset_peak` (Linux)."""
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def reset_peak(_actor=None) -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def plain_inference(model, pool, batch_size: int, pad_token_id: int, threads: int) -> float:
    """Texts/s of one process scoring the whole pool with the same length-bucketed batches."""
    from raydistill.platform.models import predict_logits
    from raydistill.platform.text import make_loader

    torch.set_num_threads(threads)
    started = time.perf_counter()
    predict_logits(model, make_loader(pool, batch_size, pad_token_id=pad_token_id), torch.device("cpu"))
    return len(pool) / (time.perf_counter() - started)


def scoring_rounds(scratch: Path, pool_file: Path, pool_size: int, model, pad_token_id: int,
                   scorers: int, cpus: float, batch_size: int) -> dict:
    """Two acquisitions through a fresh ActiveLearner: round 1 starts the scorers, round 2 is
    timed as the steady state; peak memory of every process over round 2."""
    import ray

    from raydistill.trainables.active_learner import ActiveLearner, ScoringPlan

    weights = ray.put(model.state_dict())
    plan = ScoringPlan("entropy", scorers, cpus, 0.0, batch_size, 2, pad_token_id)
    state = {"pool_size": pool_size, "initial_labeled": 1, "query_size": 1, "rounds": 2, "seed": 0}
    learner = ActiveLearner.remote(str(scratch / f"s{scorers}-{pool_size}-{time.time_ns()}"), state, plan,
                                   str(pool_file))
    config = model.config.to_dict()
    started = time.perf_counter()
    ray.get(learner.acquire.remote(1, [weights], config))
    first_round_s = time.perf_counter() - started
    workers = ray.get(learner.__ray_call__.remote(lambda self: self._scorers))
    for actor in [learner, *workers]:
        ray.get(actor.__ray_call__.remote(reset_peak))
    reset_peak()
    started = time.perf_counter()
    ray.get(learner.acquire.remote(2, [weights], config))
    seconds = time.perf_counter() - started
    row = {"scorers": scorers, "pool_rows": pool_size, "first_round_s": round(first_round_s, 1),
           "texts_per_s": (pool_size - 2) / seconds, "driver_peak_mb": peak_rss_mb(),
           "learner_peak_mb": ray.get(learner.__ray_call__.remote(peak_rss_mb)),
           "scorer_peak_mb": [ray.get(w.__ray_call__.remote(peak_rss_mb)) for w in workers]}
    for actor in [*workers, learner]:
        ray.kill(actor)
    return row


def tiled_pool(pool, rows: int, path: Path) -> Path:
    """The pool's rows repeated to ``rows`` rows, saved where the scorers read it."""
    from raydistill.platform.prepared import save_encoded

    if not path.is_dir():
        save_encoded(path, pool.subset(np.arange(rows) % len(pool)))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--scorers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--scale", type=int, default=10, help="the large pool is the run's pool tiled this many times")
    parser.add_argument("--repeats", type=int, default=2, help="plain-inference passes, best kept")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from raydistill.pipeline import open_run
    from raydistill.session import ray_session
    from raydistill.platform.models import load_classifier
    from raydistill.platform.prepared import prepare_data

    run, cfg = open_run(args.run_dir)
    data = prepare_data(cfg, run)
    pool = data.encoded["train"]
    model = load_classifier(run.teacher).eval()
    scratch = run.root / "bench" / "al_scoring"
    large = tiled_pool(pool, args.scale * len(pool), scratch / f"pool-x{args.scale}")
    most = max(args.scorers)
    with ray_session():
        import ray

        cpus = float(ray.cluster_resources().get("CPU", 1))
        per_scorer = {n: max(1.0, cpus // n) if cpus >= n else cpus / n for n in args.scorers}
        rows = [scoring_rounds(scratch, data.files["train"], len(pool), model, data.pad_token_id, n, per_scorer[n],
                               args.batch_size) for n in args.scorers]
        rows.append(scoring_rounds(scratch, large, args.scale * len(pool), model, data.pad_token_id, most,
                                   per_scorer[most], args.batch_size))
    threads = sorted({1, min(os.cpu_count() or 1, most)})
    plain = {t: max(plain_inference(model, pool, args.batch_size, data.pad_token_id, t) for _ in range(args.repeats))
             for t in threads}
    for row in rows:
        same = plain[min(plain, key=lambda t: abs(t - row["scorers"]))]
        row.update(vs_plain_1_thread=row["texts_per_s"] / plain[1], vs_plain_same_cores=row["texts_per_s"] / same)
    pool_mb = sum(a.nbytes for a in (pool.ids, pool.type_ids, pool.offsets)) / 2**20
    for row in rows:
        row["pool_tokens_mb"] = pool_mb * row["pool_rows"] / len(pool)

    print(f"pool scoring, {run.root.name}: entropy, batch {args.batch_size}, 1 thread a scorer")
    print("plain inference: " + ", ".join(f"{t} thread(s) {v:,.0f} texts/s" for t, v in plain.items()))
    print("| scorers | pool rows | pool tokens MB | texts/s | x plain 1 thread | x plain same cores "
          "| first round s | driver peak MB | learner peak MB | scorer peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scorers']} | {r['pool_rows']:,} | {r['pool_tokens_mb']:.1f} | {r['texts_per_s']:,.0f} "
              f"| {r['vs_plain_1_thread']:.2f}x | {r['vs_plain_same_cores']:.2f}x | {r['first_round_s']} "
              f"| {r['driver_peak_mb']:,.0f} | {r['learner_peak_mb']:,.0f} "
              f"| {', '.join(f'{m:,.0f}' for m in r['scorer_peak_mb'])} |")
    small, big = next(r for r in rows if r["scorers"] == most), rows[-1]
    for who in ("driver", "learner"):
        print(f"{who} peak: {small[who + '_peak_mb']:,.0f} MB -> {big[who + '_peak_mb']:,.0f} MB as the pool grew "
              f"{args.scale}x")
    print(f"largest scorer peak: {max(small['scorer_peak_mb']):,.0f} MB -> {max(big['scorer_peak_mb']):,.0f} MB")
    out = args.out or Path(__file__).parent / "results" / "al_scoring-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "run": run.root.name, "batch_size": args.batch_size, "plain_texts_per_s": plain,
        "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
