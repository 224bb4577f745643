"""Serving throughput of a run's student vs teacher, and batched vs per-request, in one run.

    python benchmarks/serve_throughput.py runs/minilm-rt-20250101-120000
    python benchmarks/serve_throughput.py RUN_DIR --set bench.concurrency=[1,8,32]
    python benchmarks/serve_throughput.py RUN_DIR --base-url http://127.0.0.1:8000  # running app

Writes <run>/bench.json, <run>/bench.md and <run>/plots/bench.png (see raydistill.serve.bench).
Starts a local Ray unless RAY_ADDRESS or --address names a cluster; a running app given by
--base-url must belong to that cluster's Serve (the per-request baseline is deployed beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from raydistill.platform.config import load_config
from raydistill.platform.errors import RaydistillError
from raydistill.platform.rundir import RunDir
from raydistill.serve.bench import run_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run directory with student/ and teacher/")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="bench.KEY=VALUE", help="override the run's bench settings")
    parser.add_argument("--base-url", help="a running gateway of this run (loopback only)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the per-request baseline")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or "local",
                        help="Ray cluster address (default: start a local one)")
    args = parser.parse_args(argv)

    import ray

    try:
        run = RunDir.existing(args.run_dir)
        bench = load_config(run.config, args.overrides).bench
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
        try:
            result = run_bench(run.root, bench, base_url=args.base_url, baseline=not args.no_baseline)
        finally:
            ray.shutdown()
    except RaydistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
