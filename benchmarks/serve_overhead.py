"""Serve's own cost per request, with no model: an ingress that answers in place vs the same
ingress calling a no-op deployment through a handle (the Gateway -> model hop).

Both apps run side by side on one private local Ray, behind the same proxy, driven by the
project's load generator (``raydistill.serve.loadgen``) at each concurrency, in one run. At
saturation every core is busy, so cores / (requests/s) is the CPU one request costs the stack
(proxy, ingress, hop and this load generator together): the floor under any model's time per
request, and what a request of one text pays that a batched in-process forward pass does not.

    python benchmarks/serve_overhead.py [--concurrency 1 32] [--requests 1500] [--out FILE.json]
"""

import argparse
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from fastapi import FastAPI, Request
from ray import serve

from raydistill.platform.machine import cpu_name

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--requests", type=int, default=1500, help="requests per level")
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound per level")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from raydistill.session import ray_session
    from raydistill.serve.loadgen import run_load

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
            for concurrency in args.concurrency:
                for app in ("direct", "hop"):
                    r = run_load(f"http://127.0.0.1:{port}/{app}", "student", texts, concurrency,
                                 max_requests=args.requests, max_seconds=args.seconds,
                                 warmup_requests=min(50, args.requests))
                    if not r["ok"]:
                        raise SystemExit(f"{app}: no request answered: {r['outcomes']}")
                    levels.append({"app": app, "concurrency": concurrency, "req_per_s": r["req_per_s"],
                                   "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "errors": r["errors"],
                                   "cpu_ms_per_request": 1000 * cores / r["req_per_s"]})
        finally:
            serve.shutdown()

    print(f"Serve with no model ({cores:g} cores; 1 text a request; the load generator on the same cores)")
    print("| app | concurrency | req/s | p50 ms | p99 ms | errors | cores / req/s, ms |")
    print("|---|---|---|---|---|---|---|")
    for r in levels:
        print(f"| {r['app']} | {r['concurrency']} | {r['req_per_s']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
              f"| {r['errors']} | {r['cpu_ms_per_request']:.1f} |")
    top = max(args.concurrency)
    by = {r["app"]: r for r in levels if r["concurrency"] == top}
    print(f"at concurrency {top}: the handle hop costs {by['hop']['cpu_ms_per_request'] - by['direct']['cpu_ms_per_request']:.1f} "
          f"ms of CPU a request; the proxy, the ingress and the client {by['direct']['cpu_ms_per_request']:.1f} ms")
    out = args.out or Path(__file__).parent / "results" / "serve_overhead-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "machine": f"{cpu_name()}, {os.cpu_count()} cores",
                               "levels": levels}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
