"""The serving figures of a run against their goals, from one ``raydistill bench`` run.

Runs the benchmark of ``raydistill bench RUN_DIR`` (in process, then HTTP through Serve, batched
and per request, at every concurrency and texts-per-request level of the run's ``bench``
section, or of ``--set bench.*`` overrides), then prints each ratio beside its goal:

- Serve keeps >= 70% of the student's in-process batched texts/s (best HTTP level);
- the student/teacher ratio over HTTP is >= 90% of the in-process ratio;
- batched serving beats per-request serving (``max_batch_size=1``) >= 2x at the top concurrency.

    python benchmarks/serve_bench.py RUN_DIR [--set bench.texts_per_request=[1,8]]

Writes ``benchmarks/results/serve_bench-<device>.json`` (and the run's bench.json/bench.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

GOALS = (  # (summary key, goal, what it says)
    ("student_share_of_in_process", 0.70, "Serve keeps of the student's in-process texts/s"),
    ("share_of_in_process_ratio", 0.90, "HTTP student/teacher ratio, share of the in-process ratio"),
    ("student_batched_vs_per_request", 2.0, "student batched / per-request texts/s"),
    ("teacher_batched_vs_per_request", 2.0, "teacher batched / per-request texts/s"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from raydistill.pipeline import open_run, ray_session, serve_and_bench
    from raydistill.platform import logs

    logs.configure()
    run, cfg = open_run(args.run_dir, args.overrides)
    with ray_session():
        bench = serve_and_bench(cfg, run, keep_serving=False)
    summary = bench["summary"]
    print(f"\nin process, batch {summary['in_process_batch_size']}: student/teacher "
          f"{summary['in_process_student_vs_teacher']:.2f}x")
    print(f"over HTTP at {summary['http_concurrency']} concurrent clients:\n")
    print("| texts/request | figure | measured | goal | met |\n|---|---|---|---|---|")
    for entry in summary["http"]:
        print(f"| {entry['texts_per_request']} | student/teacher | {entry['student_vs_teacher']:.2f}x | | |")
        for key, goal, what in GOALS:
            value = entry.get(key)
            if value is not None:
                shown = f"{value:.2f}x" if goal > 1 else f"{100 * value:.0f}%"
                wanted = f">= {goal:g}x" if goal > 1 else f">= {100 * goal:.0f}%"
                print(f"| {entry['texts_per_request']} | {what} | {shown} | {wanted} | "
                      f"{'yes' if value >= goal else 'no'} |")
    device = bench["machine"]["device"]
    out = args.out or Path(__file__).parent / "results" / f"serve_bench-{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bench, indent=2) + "\n")
    print(f"\nwrote {out} (and {run.bench_md})")


if __name__ == "__main__":
    main()
