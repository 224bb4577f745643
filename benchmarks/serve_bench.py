"""The serving figures of a run against their goals, from one run of ``raydistill bench``.

Runs the serving benchmark (in process, then HTTP through Serve, batched and per request, at
every concurrency and texts-per-request level of the run's ``bench`` section or ``--set``
overrides), then prints each ratio beside its goal:

- Serve keeps >= 70% of the student's in-process batched texts/s (best HTTP level);
- the student/teacher ratio over HTTP is >= 90% of the in-process ratio;
- batched serving beats per-request serving (``max_batch_size=1``) >= 2x at the top concurrency.

    python benchmarks/serve_bench.py RUN_DIR
    python benchmarks/serve_bench.py RUN_DIR --set bench.concurrency=[1,8,32] --set bench.texts_per_request=[1,8]
    python benchmarks/serve_bench.py RUN_DIR --base-url http://127.0.0.1:8000   # a running app

Writes the run's bench.json, bench.md and plots/bench.png, and a copy of the figures in
``benchmarks/results/serve_bench-<device>.json``. Starts a local Ray unless RAY_ADDRESS or
--address names a cluster; a running app given by --base-url must belong to that cluster's Serve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from raydistill.platform import logs
from raydistill.platform.config import load_config
from raydistill.platform.errors import RaydistillError
from raydistill.platform.rundir import RunDir
from raydistill.serve.bench import run_bench

GOALS = (  # (summary key per texts-per-request setting, goal, what it measures)
    ("student_share_of_in_process", 0.70, "Serve keeps of the student's in-process texts/s"),
    ("student_share_of_in_process_ratio", 0.90, "HTTP student/teacher ratio, share of the in-process ratio"),
    ("student_int8_vs_teacher", 3.5, "HTTP int8 student / fp32 teacher texts/s"),
    ("student_batched_vs_per_request", 2.0, "student batched / per-request texts/s"),
    ("teacher_batched_vs_per_request", 2.0, "teacher batched / per-request texts/s"),
)


def goals_table(summary: dict) -> list[str]:
    lines = [f"in process, batch {summary['in_process_batch_size']}: student/teacher "
             f"{summary['in_process_student_vs_teacher']:.2f}x; over HTTP at {summary['http_concurrency']} "
             "concurrent clients:", "",
             "| texts/request | figure | measured | goal | met |", "|---|---|---|---|---|"]
    for entry in summary["http"]:
        per = entry["texts_per_request"]
        lines.append(f"| {per} | student/teacher texts/s | {entry['student_vs_teacher']:.2f}x | | |")
        for key, goal, what in GOALS:
            if (value := entry.get(key)) is None:
                continue
            shown, wanted = ((f"{value:.2f}x", f">= {goal:g}x") if goal > 1
                             else (f"{100 * value:.0f}%", f">= {100 * goal:.0f}%"))
            lines.append(f"| {per} | {what} | {shown} | {wanted} | {'yes' if value >= goal else 'no'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory with student/ and teacher/")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="bench.KEY=VALUE", help="override the run's bench settings")
    parser.add_argument("--base-url", help="a running gateway of this run (loopback only)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the per-request baseline")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or "local",
                        help="Ray cluster address (default: start a local one)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    logs.configure()

    import ray

    try:
        run = RunDir.existing(args.run_dir)
        bench = load_config(run.config, args.overrides).bench
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            result = run_bench(run.root, bench, base_url=args.base_url, baseline=not args.no_baseline)
        finally:
            ray.shutdown()
    except RaydistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n" + "\n".join(goals_table(result["summary"])))
    out = args.out or Path(__file__).parent / "results" / f"serve_bench-{result['machine']['device']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out} (and {run.bench_md})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
