"""The study as the service shows it: ``GET /v1/results`` (the table with verdicts, the teacher,
the exported student's provenance, active learning, serving ratios), the run's plots under
``/results/plots/<name>`` (known names only: no path traversal), and a run with no sweep yet.
The page itself is tested in Chromium in test_page.py."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

import raydistill
from raydistill.platform.report import strategy_sentence
from raydistill.platform.rundir import RunDir, atomic_write_json
from raydistill.serve.facts import NO_STUDY, plot_path, study_facts, study_signature

from .conftest import SWEEP, lone_gateway, no_sweep_copy

STRATEGIES = sorted({strategy for strategy, _ in SWEEP})
VERDICTS = {"best", "worse", "equivalent", "inconclusive", "not tested"}
PNG = b"\x89PNG\r\n\x1a\n"
# Names that must never reach a file outside the known plots. Percent-encoded: a client sends
# them as they are (a literal "../" is resolved by the client itself; _raw_get sends one anyway).
TRAVERSALS = [
    "..%2F..%2Fconfig.yaml", "..%2Fconfig.yaml", "%2e%2e%2fconfig.yaml", "..%5Cconfig.yaml",
    "%2E%2E%2F%2E%2E%2Freport.md", "config.yaml", "report.md", "%2e%2e", "plots", "curve.png",
    "val_accuracy.png%00.yaml", "VAL_ACCURACY.PNG", "%2Fetc%2Fpasswd", "%2e%2e%2f%2e%2e%2fconfig.yaml",
]
LITERAL_TRAVERSALS = ["/results/plots/../../config.yaml", "/results/plots/../config.yaml",
                      "/results/plots/./../../report.md", "/results/plots/..\\..\\config.yaml"]


def _raw_get(url: str, path: str, token: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no dot-segment removal), over a plain socket."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                     "Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


def _bench_json(run: RunDir) -> dict:
    """A bench.json in the bench's format, its summary and headline made by the bench's own code."""
    from raydistill.serve.bench_report import headline, summarize_bench as _summary

    def level(tps: float) -> dict:
        return {"texts_per_s": tps, "req_per_s": tps, "p50_ms": 10.0, "p95_ms": 20.0, "p99_ms": 30.0,
                "errors": 0, "ok": 16, "requests": 16}

    in_process = [{"batch_size": b, "student": {"texts_per_s": 200.0 * b, "ms_per_batch": 5.0},
                   "teacher": {"texts_per_s": 100.0 * b, "ms_per_batch": 10.0}, "student_vs_teacher": 2.0}
                  for b in (1, 8)]
    http = [{"texts_per_request": 1, "concurrency": c, "student_batched": level(150.0 * c),
             "teacher_batched": level(90.0 * c), "student_per_request": level(100.0 * c),
             "teacher_per_request": level(60.0 * c), "student_vs_teacher": 150 / 90,
             "student_batched_vs_per_request": 1.5, "teacher_batched_vs_per_request": 1.5}
            for c in (1, 8)]
    summary = _summary(in_process, http, ["student", "teacher"])
    result = {"created": "2026-11-24T10:00:00+00:00", "run_dir": run.root.name,
              "machine": {"cpu": "Test CPU", "cpu_cores": 2, "device": "cpu", "gpu": None},
              "in_process": in_process, "http": http, "summary": summary,
              "headline": headline(summary, ["student", "teacher"])}
    atomic_write_json(run.bench_json, result)
    return result


# ----------------------------------------------------------------------------- no Serve


@pytest.mark.unit
def test_study_facts_are_the_reports_numbers(tiny_run):
    study = study_facts(tiny_run)
    assert study["available"] and study["message"] is None and study["run"] == tiny_run.name
    expected = raydistill.results(tiny_run)  # the notebook API: the same helpers, the same numbers
    assert study["verdict"] == expected.verdict and "cluster bootstrap" in study["policy"]
    assert study["margin"] == 0.01 and [s["strategy"] for s in study["strategies"]] == list(expected.strategies["strategy"])
    assert {s["verdict"] for s in study["strategies"]} <= VERDICTS
    assert study["strategy_verdict"] == strategy_sentence(expected.strategies)
    cells = [(c["strategy"], c["temperature"], c["verdict"]) for c in study["cells"]]
    assert cells == list(zip(expected.cells["strategy"], expected.cells["temperature"], expected.cells["verdict"]))
    assert sorted({c["strategy"] for c in study["cells"]}) == STRATEGIES and len(cells) == len(SWEEP)
    assert {c["verdict"] for c in study["cells"]} <= VERDICTS and cells[0][:2] == ("uniform", 2.0)
    assert study["cells"][0]["val_accuracy_mean"] == pytest.approx(0.8125)
    assert {c["strategy"] for c in study["cells"] if c["verdict"] == "worse"} == {"bottom"}
    assert study["trials"] == {"total": 12, "completed": 12, "error": 0, "stopped_early": 0, "duplicate": 0}
    teacher = study["teacher"]
    assert teacher["validation_accuracy"] == 0.875 and teacher["test_accuracy"] == 0.8125
    assert teacher["layers"] == 4 and teacher["parameters"] > 0 and teacher["majority_baseline"] == 0.5
    winner = study["winner"]
    assert winner["best_cell"] == {"strategy": "uniform", "temperature": 2.0}
    assert winner["exported_is_best_cell"] is True and winner["provenance"]["teacher_layers"] == [0, 3]
    al = study["active_learning"]
    assert [(r["acquisition"], r["labeled_count"]) for r in al["curve"]][:2] == [("entropy", 4), ("entropy", 6)]
    assert [r["labeled_count"] for r in al["vs_random"]] == [4, 6]
    assert al["vs_random"][1]["sentence"].startswith("At 6 labels entropy")
    assert [p["name"] for p in study["plots"]][:4] == ["forest.png", "val_accuracy.png", "learning_curves.png",
                                                       "active_learning.png"]
    json.dumps(study, allow_nan=False)  # strict JSON, as the response sends it


@pytest.mark.unit
def test_a_run_without_a_sweep_says_so(tiny_run, tmp_path):
    root = no_sweep_copy(tiny_run, tmp_path / "no-sweep")
    study = study_facts(root)
    assert not study["available"] and study["message"] == NO_STUDY
    assert study["cells"] == [] and study["verdict"] is None and study["winner"]["best_cell"] is None
    assert study["teacher"]["validation_accuracy"] == 0.875  # teacher/eval.json
    assert study["active_learning"]["vs_random"] and study["serving"] is None
    assert study["plots"] == []
    assert str(tmp_path) not in json.dumps(study)  # no host paths in what the client gets


@pytest.mark.unit
def test_serving_ratios_come_from_bench_json(tiny_run, tmp_path):
    run = RunDir(no_sweep_copy(tiny_run, tmp_path / "benched"))
    before = study_signature(run.root)
    result = _bench_json(run)
    assert study_signature(run.root) != before  # a cached study goes stale
    serving = study_facts(run.root)["serving"]
    assert serving["headline"] == result["headline"] and serving["summary"] == result["summary"]
    assert [row["concurrency"] for row in serving["http"]] == [1, 8]
    assert serving["http"][1]["student_batched_vs_per_request"] == 1.5
    assert serving["in_process"] == [{"batch_size": 1, "student_vs_teacher": 2.0, "student_int8_vs_teacher": None},
                                     {"batch_size": 8, "student_vs_teacher": 2.0, "student_int8_vs_teacher": None}]
    run.bench_json.write_text("{not json")
    assert study_facts(run.root)["serving"] == {"error": "bench.json could not be read"}


@pytest.mark.unit
def test_plots_are_looked_up_by_name_only(tiny_run):
    run = RunDir(tiny_run)
    assert plot_path(run, "val_accuracy.png") == run.plots / "val_accuracy.png"
    for name in ["../config.yaml", "../../etc/passwd", "plots/val_accuracy.png", str(run.config),
                 "report.md", "", ".", "al_curve.png"]:  # the last is known but absent here
        assert plot_path(run, name) is None, name


# ----------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served.url, headers=served.auth, timeout=60, trust_env=False) as c:
        yield c


@pytest.mark.ray
def test_results_api_serves_the_study(client, tiny_run):
    r = client.get("/v1/results")
    assert r.status_code == 200, r.text
    study = r.json()
    expected = study_facts(tiny_run)
    for key in ("available", "cells", "verdict", "trials", "teacher", "winner", "active_learning", "plots"):
        assert study[key] == expected[key], key
    assert study["run"] == tiny_run.name
    assert "/v1/results" in client.get("/openapi.json").json()["paths"]


@pytest.mark.ray
def test_results_plots_are_pngs_and_nothing_else(client, served, tiny_run):
    listed = client.get("/v1/results").json()["plots"]
    assert {p["name"] for p in listed} >= {"val_accuracy.png", "learning_curves.png", "active_learning.png"}
    for plot in listed:
        r = client.get("/" + plot["url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", plot
        assert r.content[:8] == PNG
    config = (tiny_run / "config.yaml").read_text()
    failures = []
    for name in TRAVERSALS:
        # raw paths: httpx would otherwise normalise ".." away before sending
        r = client.get(httpx.URL(served.url + "/results/plots/" + name))
        if r.status_code != 404 or "image/png" in r.headers.get("content-type", "") or "serve:" in r.text:
            failures.append(f"{name}: {r.status_code} {r.text[:100]}")
    for path in LITERAL_TRAVERSALS:
        status, answer = _raw_get(served.url, path, served.token)
        if status != 404 or b"serve:" in answer or PNG in answer:
            failures.append(f"{path}: {answer[:300]!r}")
    assert not failures, "\n".join(failures)
    assert config and "serve:" in config  # what a leak would have shown


@pytest.mark.ray
def test_results_follow_the_token_policy(served):
    with httpx.Client(base_url=served.url, timeout=60, trust_env=False) as anon:
        # the study is data: behind the token, like /v1/models; so are its figures
        assert anon.get("/v1/results").status_code == 401
        assert anon.get("/results/plots/val_accuracy.png").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert anon.get("/results/plots/val_accuracy.png", headers=wrong).status_code == 401
        # the page and its script hold no study data: public, like /
        page = anon.get("/results")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'src="page/results.js"' in page.text and 'href="./"' in page.text
        assert anon.get("/page/results.js").status_code == 200
        assert 'href="results"' in anon.get("/").text  # linked from the classify page


@pytest.mark.ray
def test_a_gateway_without_a_sweep_says_so_and_follows_the_run(served, tiny_run, tmp_path):
    """A Gateway on a run with no sweep yet answers 200 and says so (never a 500); once the
    sweep's files and the report are there, the next request shows them."""
    root = no_sweep_copy(tiny_run, tmp_path / "no-sweep")
    with lone_gateway(served, "no-sweep", root) as url, httpx.Client(
            base_url=url, headers=served.auth, timeout=60, trust_env=False) as c:
        r = c.get("/v1/results")
        assert r.status_code == 200 and r.json()["available"] is False, r.text
        assert r.json()["message"] == NO_STUDY and r.json()["cells"] == []
        assert c.get("/results/plots/val_accuracy.png").status_code == 404
        page = c.get("/results")
        assert page.status_code == 200 and '<base href="/no-sweep/">' in page.text
        for name in ("tune", "plots"):
            shutil.copytree(tiny_run / name, root / name)
        r = c.get("/v1/results")
        assert r.json()["available"] is True and len(r.json()["cells"]) == len(SWEEP)
        assert c.get("/results/plots/val_accuracy.png").content[:8] == PNG
