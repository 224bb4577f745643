"""HTTP load generator for ``POST /v1/classify``: loopback only, bounded in requests and time.

``concurrency`` workers share one request budget; a level ends when ``max_requests`` have
been sent or ``max_seconds`` have passed (plus at most one request timeout for the requests
in flight). Classification is idempotent, so with ``retries`` a request that met a dead
replica (a 500/502/503/504 or a dropped connection) is sent again, as a well-behaved client
would; the result counts those retries. It refuses any host that is not loopback: it is a benchmark of this machine's
Serve, never a tool to load someone else's server.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from raydistill.platform.errors import RaydistillError

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
# What a replica that died mid-request looks like to a client: worth sending again.
_RETRYABLE = (500, 502, 503, 504)


class LoadTargetError(RaydistillError):
    """The load generator was pointed at a host that is not loopback, or at a bad URL."""


def ensure_loopback(url: str) -> None:
    """Raise LoadTargetError unless ``url`` is http(s) on 127.0.0.0/8, ::1 or localhost."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadTargetError(f"load target {url!r} must be an http:// URL with a host")
    host = parts.hostname.lower()
    if host in LOOPBACK_NAMES:
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise LoadTargetError(
        f"load target host {host!r} is not loopback: the load generator only targets "
        "127.0.0.1, ::1 or localhost"
    )


def server_timing(header: str | None) -> dict[str, float]:
    """``{"gateway": ms, "model": ms}`` from a ``Server-Timing`` header (W3C syntax:
    ``name;dur=ms, ...``); metrics without a duration or that do not parse are left out."""
    out: dict[str, float] = {}
    for metric in (header or "").split(","):
        name, *params = [part.strip() for part in metric.split(";")]
        for param in params:
            key, _, value = param.partition("=")
            if name and key.strip() == "dur":
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
    return out


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _payloads(texts: list[str], model: str, texts_per_request: int):
    """Request i takes the next ``texts_per_request`` texts, cycling through ``texts``."""
    n = len(texts)

    def payload(i: int) -> dict[str, Any]:
        start = i * texts_per_request
        return {"texts": [texts[(start + j) % n] for j in range(texts_per_request)], "model": model}

    return payload


async def _level(
    base_url: str,
    model: str,
    texts: list[str],
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    texts_per_request: int,
    token: str | None,
    timeout_s: float,
    warmup_requests: int,
    retries: int,
) -> dict[str, Any]:
    url = base_url.rstrip("/") + "/v1/classify"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    payload = _payloads(texts, model, texts_per_request)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    server: collections.defaultdict[str, list[float]] = collections.defaultdict(list)
    outcomes: collections.Counter[str] = collections.Counter()
    retried = 0
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, trust_env=False) as client:

        async def send(i: int, attempts_left: int = 0) -> tuple[str, float]:
            nonlocal retried
            t0 = time.perf_counter()
            for attempt in range(attempts_left + 1):
                try:
                    response = await client.post(url, json=payload(i), headers=headers)
                    outcome, retryable = str(response.status_code), response.status_code in _RETRYABLE
                    if outcome == "200" and recording:
                        for name, ms in server_timing(response.headers.get("server-timing")).items():
                            server[name].append(ms)
                except httpx.TransportError as err:
                    outcome, retryable = type(err).__name__, True
                except httpx.HTTPError as err:
                    outcome, retryable = type(err).__name__, False
                if not retryable or attempt == attempts_left:
                    break
                retried += 1
            return outcome, time.perf_counter() - t0

        # Warm-up (not recorded): connections open, replicas have run a forward pass.
        recording = False
        await asyncio.gather(*(send(i) for i in range(warmup_requests)))
        recording = True

        issued = 0
        started = time.perf_counter()
        deadline = started + max_seconds

        async def worker() -> None:
            nonlocal issued
            while issued < max_requests and time.perf_counter() < deadline:
                i = issued
                issued += 1
                outcome, seconds = await send(i, retries)
                outcomes[outcome] += 1
                if outcome == "200":
                    latencies.append(seconds)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ok = outcomes.get("200", 0)
    ms = [x * 1000 for x in latencies]
    return {
        "model": model,
        "concurrency": concurrency,
        "requests": issued,
        "ok": ok,
        "errors": issued - ok,
        "outcomes": dict(sorted(outcomes.items())),
        "retried": retried,
        "seconds": round(elapsed, 4),
        "req_per_s": ok / elapsed if elapsed > 0 else 0.0,
        "texts_per_s": ok * texts_per_request / elapsed if elapsed > 0 else 0.0,
        "mean_ms": float(np.mean(ms)) if ms else None,
        "p50_ms": _percentile(ms, 50),
        "p95_ms": _percentile(ms, 95),
        "p99_ms": _percentile(ms, 99),
        # Mean milliseconds per successful request inside the Gateway and inside its model call
        # (Server-Timing); the client's mean minus the Gateway's is Serve's proxy and the socket.
        **{f"server_{name}_ms": float(np.mean(values)) for name, values in sorted(server.items())},
    }


def run_load(
    base_url: str,
    model: str,
    texts: list[str],
    concurrency: int,
    *,
    max_requests: int,
    max_seconds: float,
    texts_per_request: int = 1,
    token: str | None = None,
    timeout_s: float = 30.0,
    warmup_requests: int = 0,
    retries: int = 0,
) -> dict[str, Any]:
    """One load level against ``base_url`` (a loopback Serve gateway).

    Returns ``requests``, ``ok``, ``errors`` (non-200 or transport errors), ``outcomes`` (count
    per status code / error type, after retries), ``retried`` (requests sent again after a
    500/502/503/504 or a transport error, at most ``retries`` times each), ``seconds``, ``req_per_s``, ``texts_per_s`` (successful
    only) and ``mean_ms``/``p50_ms``/``p95_ms``/``p99_ms`` over successful requests (None if
    none succeeded). Raises LoadTargetError for a non-loopback URL, ValueError for bad bounds.
    """
    ensure_loopback(base_url)
    if concurrency < 1 or max_requests < 1 or max_seconds <= 0 or texts_per_request < 1:
        raise ValueError(
            f"need concurrency, max_requests, texts_per_request >= 1 and max_seconds > 0; got "
            f"{concurrency}, {max_requests}, {texts_per_request}, {max_seconds}"
        )
    if not texts:
        raise ValueError("the load generator needs at least one text")
    return asyncio.run(
        _level(base_url, model, list(texts), concurrency, max_requests, max_seconds,
               texts_per_request, token, timeout_s, warmup_requests, retries)
    )
