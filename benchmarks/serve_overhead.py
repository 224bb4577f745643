"""Serve's own cost per request, with no model: an ingress that answers in place vs the same
ingress calling a no-op deployment through a handle (the Gateway -> model hop), behind each of
Serve's ingress stacks in turn (``serve.ingress``: Ray's Python proxy, or Ray's HAProxy ingress
in Ray's throughput-optimised mode; and each of those two switches alone), and where that CPU
goes, process by process.

Each stack runs in its own private local Ray (the switches are read when Ray starts), both apps
side by side, driven by the project's load generator (``raydistill.serve.loadgen``) at each
concurrency. At saturation every core is busy, so cores / (requests/s) is the CPU one request
costs the stack (proxy, ingress, hop and this load generator together): the floor under any
model's time per request, and what a request of one text pays that a batched in-process forward
pass does not. The CPU seconds of every process of the session (``/proc``), read before and
after each level, split that floor by process. With ``--run RUN`` a third app serves that
run's student (the project's Gateway and batching Classifier), so the split shows how much of a
one-text request's CPU is the model at all.

    python benchmarks/serve_overhead.py [--ingress proxy haproxy haproxy-alone throughput-alone] [--concurrency 1 32]
        [--requests 1500] [--run RUN_DIR] [--out FILE.json]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from fastapi import FastAPI, Request
from ray import serve

from raydistill.platform.machine import cpu_by_group, cpu_name, process_tree_cpu
from raydistill.session import INGRESS_ENV

api = FastAPI()


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
class NoOpModel:
    async def __call__(self, texts: list[str]) -> list[dict]:
        return [{"label": "positive", "score": 1.0} for _ in texts]


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024)
@serve.ingress(api)
class Ingress:
    """Reads the JSON body like the Gateway; answers itself, or through ``model``'s handle."""

    def __init__(self, model=None) -> None:
        self.model = model

    @api.post("/v1/classify")
    async def classify(self, request: Request) -> dict:
        body = await request.json()
        texts = body["texts"]
        if self.model is None:
            predictions = [{"label": "positive", "score": 1.0} for _ in texts]
        else:
            predictions = await self.model.remote(texts)
        return {"model": body.get("model"), "predictions": predictions}


# Ray Serve's switches for each stack: serve.ingress's two, and each of haproxy's two switches
# alone; Serve reads them when its processes start.
STACK_ENV = {**INGRESS_ENV, "haproxy-alone": {"RAY_SERVE_ENABLE_HA_PROXY": "1"},
             "throughput-alone": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(concurrencies: list[int], requests: int, seconds: float, run_dir: str | None) -> dict:
    """The apps behind this process's Serve at each concurrency, with the CPU by process."""
    from raydistill.serve import app as serve_app
    from raydistill.serve.loadgen import run_load
    from raydistill.session import ray_session

    port = free_port()
    texts = ["a quiet, moving film that earns its ending"]
    levels = []
    with ray_session():
        import ray

        cores = float(ray.cluster_resources().get("CPU", 1))
        serve.start(http_options={"host": "127.0.0.1", "port": port},
                    logging_config={"enable_access_log": False})
        try:
            serve.run(Ingress.bind(), name="direct", route_prefix="/direct")
            serve.run(Ingress.bind(NoOpModel.bind()), name="hop", route_prefix="/hop")
            apps = ["direct", "hop"]
            if run_dir:
                serve_app.deploy_many(run_dir, [serve_app.AppSpec(name="student", route_prefix="/student",
                                                                  models=["student"])], token="")
                apps.append("student")
            for concurrency in concurrencies:
                for app in apps:
                    url = f"http://127.0.0.1:{port}/{app}"
                    run_load(url, "student", texts, concurrency, max_requests=min(50, requests),
                             max_seconds=seconds)  # warm-up, outside the CPU accounting
                    before = process_tree_cpu()
                    r = run_load(url, "student", texts, concurrency, max_requests=requests, max_seconds=seconds)
                    used = cpu_by_group(before, process_tree_cpu())
                    if not r["ok"]:
                        raise SystemExit(f"{app}: no request answered: {r['outcomes']}")
                    levels.append({"app": app, "concurrency": concurrency, "req_per_s": r["req_per_s"],
                                   "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "errors": r["errors"],
                                   "cpu_ms_per_request": 1000 * cores / r["req_per_s"],
                                   "measured_cpu_ms_per_request": {
                                       name: 1000 * s / r["ok"] for name, s in used.items()}})
        finally:
            serve.shutdown()
    return {"cores": cores, "levels": levels}


def run_stack(ingress: str, args: argparse.Namespace) -> dict:
    """One stack in a fresh process (and so a fresh Ray), its switches in the environment."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "levels.json"
        env = {**os.environ, **STACK_ENV[ingress]}
        cmd = [sys.executable, __file__, "--stack-json", str(out), "--requests", str(args.requests),
               "--seconds", str(args.seconds), "--concurrency", *map(str, args.concurrency),
               *(["--run", str(args.run)] if args.run else [])]
        subprocess.run(cmd, env=env, check=True)
        return json.loads(out.read_text())


def print_stack(ingress: str, result: dict) -> None:
    print(f"\n## {ingress} ({result['cores']:g} cores; 1 text a request; the load generator on the same cores)")
    print("| app | concurrency | req/s | p50 ms | p99 ms | errors | cores / req/s, ms | CPU ms a request, by process |")
    print("|---|---|---|---|---|---|---|---|")
    for r in result["levels"]:
        by_process = ", ".join(f"{name} {ms:.1f}" for name, ms in r["measured_cpu_ms_per_request"].items() if ms >= 0.1)
        print(f"| {r['app']} | {r['concurrency']} | {r['req_per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
              f"| {r['errors']} | {r['cpu_ms_per_request']:.1f} | {by_process} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingress", nargs="+", choices=sorted(STACK_ENV), default=list(STACK_ENV))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=1500, help="requests per level")
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound per level")
    parser.add_argument("--run", type=Path, default=None, help="also serve this run's student")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--stack-json", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stack_json:  # the child of run_stack
        args.stack_json.write_text(json.dumps(measure(args.concurrency, args.requests, args.seconds,
                                                     str(args.run) if args.run else None)))
        return

    stacks = {}
    for ingress in args.ingress:
        stacks[ingress] = run_stack(ingress, args)
        print_stack(ingress, stacks[ingress])
    top = max(args.concurrency)
    print(f"\nat concurrency {top}, cores / (req/s), ms of CPU a request (direct -> with the handle hop):")
    for ingress, result in stacks.items():
        by = {r["app"]: r for r in result["levels"] if r["concurrency"] == top}
        print(f"  {ingress}: {by['direct']['cpu_ms_per_request']:.1f} -> {by['hop']['cpu_ms_per_request']:.1f}")
    out = args.out or Path(__file__).parent / "results" / "serve_overhead-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "machine": f"{cpu_name()}, {os.cpu_count()} cores",
                               "stacks": stacks}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
