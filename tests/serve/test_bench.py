"""The load generator's bounds and the serving benchmark end to end on the tiny models."""

from __future__ import annotations

import json
import math
import time

import pytest

from raydistill.platform.config import BenchConfig
from raydistill.serve.loadgen import LoadTargetError, ensure_loopback, run_load, server_timing


@pytest.mark.unit
@pytest.mark.parametrize("url", ["http://127.0.0.1:8000", "http://127.3.2.1", "http://[::1]:80/x",
                                 "http://localhost:1/", "https://LOCALHOST"])
def test_loopback_targets_are_accepted(url):
    ensure_loopback(url)


@pytest.mark.unit
@pytest.mark.parametrize("url", ["http://10.0.0.1:8000", "http://example.com", "http://0.0.0.0:8000",
                                 "http://192.168.1.2", "ftp://127.0.0.1", "127.0.0.1:8000",
                                 "http://localhost.example.com"])
def test_other_targets_are_refused(url):
    with pytest.raises(LoadTargetError):
        run_load(url, "student", ["a"], 1, max_requests=1, max_seconds=1)


@pytest.mark.unit
def test_a_level_is_bounded_in_requests_and_seconds(get_free_port):
    url = f"http://127.0.0.1:{get_free_port()}"  # nothing listens: every request fails fast
    result = run_load(url, "student", ["a"], 4, max_requests=10, max_seconds=30)
    assert (result["requests"], result["ok"], result["errors"]) == (10, 0, 10)
    assert result["p99_ms"] is None and result["texts_per_s"] == 0
    assert set(result["outcomes"]) == {"ConnectError"}
    started = time.perf_counter()
    result = run_load(url, "student", ["a"], 2, max_requests=10**9, max_seconds=0.5)
    assert time.perf_counter() - started < 5 and result["requests"] < 10**9


@pytest.mark.unit
@pytest.mark.parametrize("header, parsed", [
    ("gateway;dur=12.5, model;dur=3", {"gateway": 12.5, "model": 3.0}),
    ('gateway;desc="all";dur=7.25', {"gateway": 7.25}),
    ("cache, model;dur=abc, ;dur=4", {}),
    (None, {}),
])
def test_server_timing_is_parsed_as_w3c_writes_it(header, parsed):
    assert server_timing(header) == parsed


@pytest.mark.ray
def test_bench_writes_json_md_and_plot_with_sane_numbers(served, tiny_run):
    """Against the running app (as after ``raydistill serve``): only the baseline is deployed."""
    from ray import serve

    from raydistill.serve.bench import run_bench
    from raydistill.serve.http_bench import BASELINE_APP, INT8_APP

    cfg = BenchConfig(batch_sizes=[1, 8], concurrency=[1, 8], requests_per_level=16,
                      seconds_per_level=2.0, texts_per_request=[1, 3])
    lines: list[str] = []
    result = run_bench(tiny_run, cfg, base_url=served.url, token=served.token, log=lines.append)
    on_disk = json.loads((tiny_run / "bench.json").read_text())
    assert on_disk["summary"] == result["summary"]  # JSON keeps floats exactly
    assert (tiny_run / "plots" / "bench.png").stat().st_size > 10_000
    md = (tiny_run / "bench.md").read_text()
    assert "student/teacher" in md and result["machine"]["cpu"] in md and "torch" in md
    assert any("in-process" in line for line in lines) and any("http" in line for line in lines)

    assert [row["batch_size"] for row in result["in_process"]] == [1, 8]
    assert list(result["series"]) == ["student", "teacher", "student_int8"]
    for row in result["in_process"]:
        assert row["student"]["texts_per_s"] > 0 and row["teacher"]["texts_per_s"] > 0
        assert row["student_vs_teacher"] > 0 and row["student_int8_vs_teacher"] > 0
    levels = [(row["texts_per_request"], row["concurrency"]) for row in result["http"]]
    assert levels == [(1, 1), (1, 8), (3, 1), (3, 8)]
    for row in result["http"]:
        assert row["student_vs_teacher"] > 0
        for key in ("student_batched", "teacher_batched", "student_per_request", "teacher_per_request",
                    "student_int8_batched"):
            level = row[key]
            assert level["errors"] == 0 and level["ok"] == level["requests"] > 0, level
            assert level["requests"] <= 16
            assert level["texts_per_s"] == pytest.approx(level["req_per_s"] * row["texts_per_request"])
            assert 0 < level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"]
            # where the time went: the model call inside the Gateway inside the client's request
            assert 0 < level["server_model_ms"] < level["server_gateway_ms"] < level["mean_ms"], level
        assert row["student_batched_vs_per_request"] > 0 and row["teacher_batched_vs_per_request"] > 0
    summary = result["summary"]
    assert [entry["texts_per_request"] for entry in summary["http"]] == [1, 3]
    for entry in summary["http"]:
        top = next(row for row in result["http"]
                   if row["concurrency"] == 8 and row["texts_per_request"] == entry["texts_per_request"])
        assert entry["student_vs_teacher"] == top["student_vs_teacher"]
        assert entry["student_share_of_in_process_ratio"] == pytest.approx(
            top["student_vs_teacher"] / summary["in_process_student_vs_teacher"])
        assert entry["student_int8_vs_teacher"] == top["student_int8_vs_teacher"] > 0
        assert all(v is not None and math.isfinite(v) for v in entry.values()), entry
    # in process, then per texts-per-request setting: the ratio line and the batched line
    assert len(result["headline"]) == 5 and all("x" in line for line in result["headline"])
    assert "int8 student/teacher" in result["headline"][0]
    assert "8 clients x 3 texts a request" in result["headline"][3]
    assert all(line in md for line in result["headline"])
    assert "Where a request's time goes" in md and "proxy + socket" in md
    assert result["texts"]["source"] == "validation split"
    assert result["serve"]["baseline_max_batch_size"] == 1
    # the bench removed the baseline it deployed and left the running app alone
    apps = serve.status().applications
    assert BASELINE_APP not in apps and INT8_APP not in apps and "raydistill" in apps
