"""Pool-scoring throughput: the ActiveLearner's parallel scorers vs plain batched inference.

Measured in one run on the same model and pool, printed as ratios (texts/s through the actor
with 1 and N scorers, divided by single-process batched inference). Usage:

    python benchmarks/al_scoring.py RUN_DIR [--scorers 1 2] [--repeats 3]

RUN_DIR is a run whose teacher stage finished (``raydistill teacher configs/tiny-12l.yaml``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch


def plain_inference(model, pool, batch_size: int, pad_token_id: int, threads: int) -> float:
    """Texts/s of one process scoring the whole pool with the same length-bucketed batches."""
    from raydistill.platform.models import predict_logits
    from raydistill.platform.text import make_loader

    torch.set_num_threads(threads)
    started = time.perf_counter()
    predict_logits(model, make_loader(pool, batch_size, pad_token_id=pad_token_id), torch.device("cpu"))
    return len(pool) / (time.perf_counter() - started)


def actor_scoring(run, data, model, scorers: int, cpus: float, batch_size: int, repeats: int) -> float:
    """Texts/s of ``ActiveLearner.acquire`` in steady state: round 1 starts the scorer actors
    (as the first round of a real run does), the timed rounds after it reuse them."""
    import ray

    from raydistill.trainables.active_learner import ActiveLearner, ScoringPlan

    weights = ray.put(model.state_dict())
    n = len(data.encoded["train"])
    plan = ScoringPlan("entropy", scorers, cpus, 0.0, batch_size, 2, data.pad_token_id)
    state = {"pool_size": n, "initial_labeled": 1, "query_size": 1, "rounds": repeats + 1, "seed": 0}
    learner = ActiveLearner.remote(str(run.root / "bench" / f"s{scorers}-{time.time_ns()}"), state, plan,
                                   str(data.files["train"]))
    ray.get(learner.acquire.remote(1, [weights], model.config.to_dict()))  # warm-up: starts the scorers
    best = 0.0
    for r in range(2, repeats + 2):
        candidates = n - r  # the unlabelled pool before acquisition r
        started = time.perf_counter()
        ray.get(learner.acquire.remote(r, [weights], model.config.to_dict()))
        best = max(best, candidates / (time.perf_counter() - started))
    ray.kill(learner)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--scorers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    from raydistill.pipeline import open_run, ray_session
    from raydistill.platform.models import load_classifier
    from raydistill.platform.prepared import prepare_data

    run, cfg = open_run(args.run_dir)
    data = prepare_data(cfg, run)
    model = load_classifier(run.teacher).eval()
    with ray_session():
        import ray

        cpus = float(ray.cluster_resources().get("CPU", 1))
        results = {}
        for scorers in args.scorers:
            per_scorer = max(1.0, cpus // scorers) if cpus >= scorers else cpus / scorers
            results[f"actor_{scorers}_scorers"] = actor_scoring(run, data, model, scorers, per_scorer,
                                                                args.batch_size, args.repeats)
    plain = {threads: max(plain_inference(model, data.encoded["train"], args.batch_size, data.pad_token_id, threads)
                          for _ in range(args.repeats)) for threads in sorted({1, min(os.cpu_count() or 1, max(args.scorers))})}
    report = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
              "pool": len(data.encoded["train"]), "plain_texts_per_s": plain, "actor_texts_per_s": results}
    print(json.dumps(report, indent=2))
    for scorers in args.scorers:
        actor = results[f"actor_{scorers}_scorers"]
        same_cpus = plain[min(plain, key=lambda t: abs(t - scorers))]
        print(f"{scorers} scorer(s): {actor:,.0f} texts/s = {actor / plain[1]:.2f}x plain 1-thread inference, "
              f"{actor / same_cpus:.2f}x plain inference on the same number of cores")


if __name__ == "__main__":
    main()
