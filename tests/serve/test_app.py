"""The Serve app: predictions equal in-process ones, batching is real, bad input gets a 4xx,
the token is enforced, a slow or broken model gives 503. Uses the package's one deployment
(``served``, token-protected)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import yaml
from pydantic import ValidationError

from raydistill.serve.app import BuildArgs, build_app, serve_settings
from raydistill.serve.classifier import FailedRequest, predict_isolated
from raydistill.serve.predictor import Predictor

TEXTS = [
    "a warm, funny and moving film",
    "the plot is thin and the jokes fall flat",
    "",
    "unseen words zyxq qwerty",
    "one of the best thrillers in years " * 12,  # longer than max_length: truncated
    "Tedious, OVERLONG and oddly joyless!",
]


@pytest.fixture(scope="module")
def predictors(tiny_run):
    return {name: Predictor(tiny_run / name, max_length=32) for name in ("student", "teacher")}


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=served.url, headers=served.auth, timeout=30, trust_env=False) as c:
        yield c


# ----------------------------------------------------------------------------- no Serve


@pytest.mark.unit
def test_one_bad_request_fails_alone_in_its_batch():
    """A batch that cannot be classified whole is retried request by request: only the bad
    request fails, its batch-mates get exactly the answers they would have got alone."""
    calls = []

    def predict(texts):
        calls.append(list(texts))
        if "poison" in texts:
            raise ValueError("cannot tokenise")
        return [{"label": t.upper()} for t in texts]

    requests = [["a", "b"], ["poison"], ["c"]]
    out = predict_isolated(predict, requests)
    assert out[0] == [{"label": "A"}, {"label": "B"}] and out[2] == [{"label": "C"}]
    assert isinstance(out[1], FailedRequest) and "cannot tokenise" in out[1].reason
    assert calls == [["a", "b", "poison", "c"], ["a", "b"], ["poison"], ["c"]]
    assert predict_isolated(predict, [["x"], ["y"]]) == [[{"label": "X"}], [{"label": "Y"}]]
    assert len(calls) == 5  # a good batch is one call


@pytest.mark.unit
def test_predictor_answers_in_order_whatever_the_chunking(tiny_run, predictors):
    student = predictors["student"]
    preds = student.predict(TEXTS)
    assert [set(p) for p in preds] == [{"label", "score", "scores"}] * len(TEXTS)
    assert all(p["label"] in ("negative", "positive") and 0.5 <= p["score"] <= 1 for p in preds)
    # every label's probability, in label order, summing to 1; the top one is the label
    assert all(list(p["scores"]) == ["negative", "positive"] for p in preds)
    assert all(abs(sum(p["scores"].values()) - 1) < 1e-4 and p["scores"][p["label"]] == p["score"] for p in preds)
    assert student.predict([]) == []
    small_chunks = Predictor(tiny_run / "student", max_length=32, chunk_size=2)
    assert small_chunks.logits(TEXTS).allclose(student.logits(TEXTS), atol=1e-5)
    logits = student.logits(TEXTS)
    assert [student.labels[i] for i in logits.argmax(-1).tolist()] == [p["label"] for p in preds]
    assert (student.num_layers, predictors["teacher"].num_layers) == (2, 4)


@pytest.mark.unit
def test_build_args_follow_serve_builder_convention(tiny_run):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.deployment import Application

    app = call_user_app_builder_with_args_if_necessary(
        build_app, {"run_dir": str(tiny_run), "max_batch_size": "4"}
    )
    assert isinstance(app, Application)
    assert BuildArgs(run_dir="x", max_batch_size=4, token="t").overrides() == {"max_batch_size": 4}
    with pytest.raises(Exception, match="not_a_setting"):
        build_app({"run_dir": str(tiny_run), "not_a_setting": 1})


def test_models_from_other_directories_of_the_run_are_served_under_the_apis_names(tiny_run):
    """``sources`` (the frontier's checkpoints): any model directory, at its own precision, as
    ``student`` or ``teacher``; a directory without a model, or another name, is refused before
    Serve sees it."""
    from raydistill.platform.errors import CheckpointError
    from raydistill.serve.app import ModelSource

    app = build_app({"run_dir": str(tiny_run), "sources": {
        "student": {"model_dir": str(tiny_run / "teacher"), "precision": "int8"}}})
    models = app._bound_deployment.init_args[0]  # the Gateway's first argument: its model handles
    assert list(models) == ["student"]
    bound = models["student"]._bound_deployment
    assert bound.init_args[1] == str(tiny_run / "teacher") and bound.init_kwargs["precision"] == "int8"
    assert bound.init_kwargs["tokenizer_dir"] == str(tiny_run / "tokenizer")
    with pytest.raises(CheckpointError, match="'student'.*holds no model"):
        build_app({"run_dir": str(tiny_run), "sources": {"student": ModelSource(model_dir=str(tiny_run / "nowhere"))}})
    with pytest.raises(ValidationError, match="API's model names"):
        BuildArgs(run_dir=str(tiny_run), sources={"small": ModelSource(model_dir=str(tiny_run / "student"))})


@pytest.mark.unit
def test_serve_settings_reject_bad_overrides(tiny_run):
    from raydistill.platform.config import load_config
    from raydistill.platform.errors import ConfigError

    cfg = load_config(tiny_run / "config.yaml")
    assert serve_settings(cfg, {"max_batch_size": 3}).max_batch_size == 3
    with pytest.raises(ConfigError, match="max_batch_size"):
        serve_settings(cfg, {"max_batch_size": 0})
    with pytest.raises(ConfigError, match="unknown serve settings"):
        serve_settings(cfg, {"batch": 3})


# ----------------------------------------------------------------------------- over HTTP


@pytest.mark.ray
@pytest.mark.parametrize("model", ["student", "teacher"])
def test_classify_matches_in_process_argmax(client, predictors, model):
    r = client.post("/v1/classify", json={"texts": TEXTS, "model": model})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == model and body["latency_ms"] > 0
    expected = predictors[model].predict(TEXTS)
    assert [p["label"] for p in body["predictions"]] == [p["label"] for p in expected]
    assert [p["score"] for p in body["predictions"]] == pytest.approx(
        [p["score"] for p in expected], abs=1e-4
    )


@pytest.mark.ray
def test_classify_returns_every_labels_score_or_the_top_k_as_hf_pipelines_do(client, predictors):
    expected = predictors["teacher"].predict(TEXTS)
    plain = client.post("/v1/classify", json={"texts": TEXTS, "model": "teacher"}).json()["predictions"]
    assert all(set(p) == {"label", "score"} for p in plain)
    every = client.post("/v1/classify", json={"texts": TEXTS, "model": "teacher", "return_all_scores": True})
    assert every.status_code == 200, every.text
    for got, want in zip(every.json()["predictions"], expected):
        ranked = sorted(want["scores"].items(), key=lambda item: -item[1])
        assert [(s["label"], s["score"]) for s in got["scores"]] == [tuple(x) for x in ranked]
        assert got["scores"][0] == {"label": got["label"], "score": got["score"]}
    top1 = client.post("/v1/classify", json={"texts": TEXTS, "top_k": 1}).json()["predictions"]
    assert all(len(p["scores"]) == 1 and p["scores"][0]["label"] == p["label"] for p in top1)
    assert client.post("/v1/classify", json={"texts": TEXTS, "top_k": 0}).status_code == 422
    bad = client.post("/v1/classify", json={"texts": TEXTS, "model": "bert"})
    assert bad.status_code == 422 and "model" in bad.json()["error"]


@pytest.mark.unit
def test_the_openapi_schema_names_the_models_every_error_and_the_version():
    import raydistill
    from raydistill.serve.gateway import api, ranked_scores

    schema = api.openapi()
    assert schema["info"]["version"] == raydistill.__version__
    body = schema["paths"]["/v1/classify"]["post"]
    request = body["requestBody"]["content"]["application/json"]["schema"]
    assert request["properties"]["model"]["enum"] == ["student", "teacher"]
    assert {"return_all_scores", "top_k"} <= set(request["properties"])
    assert set(body["responses"]) == {"200", "400", "401", "413", "422", "429", "431", "503"}
    error = body["responses"]["413"]["content"]["application/json"]["schema"]["$ref"]
    assert error.endswith("/ErrorBody") and set(schema["components"]["schemas"]["ErrorBody"]["properties"]) >= {
        "error", "status", "request_id"}
    assert ranked_scores({"a": 0.2, "b": 0.5, "c": 0.3}, 2) == [{"label": "b", "score": 0.5},
                                                               {"label": "c", "score": 0.3}]
    assert [s["label"] for s in ranked_scores({"a": 0.5, "b": 0.5}, None)] == ["a", "b"]  # ties in label order


@pytest.mark.ray
def test_request_larger_than_a_batch_is_split(client, predictors):
    texts = [f"{TEXTS[i % 2]} {i}" for i in range(16)]  # max_batch_size is 8, the limit 16
    r = client.post("/v1/classify", json={"texts": texts})  # model defaults to the student
    assert r.status_code == 200, r.text
    assert [p["label"] for p in r.json()["predictions"]] == [
        p["label"] for p in predictors["student"].predict(texts)
    ]


@pytest.mark.ray
def test_models_and_health(client):
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    student, teacher = models["student"], models["teacher"]
    assert (student["layers"], teacher["layers"]) == (2, 4)
    assert 0 < student["parameters"] < teacher["parameters"]
    assert student["strategy"] == "uniform" and student["teacher_layers"] == [0, 3]
    assert student["validation_accuracy"] == 0.8125 and teacher["validation_accuracy"] == 0.875
    assert student["available"] and teacher["available"]
    health = httpx.get(f"{client.base_url}/healthz", timeout=30, trust_env=False)
    assert health.status_code == 200 and health.json()["models"] == {"student": True, "teacher": True}


@pytest.mark.ray
def test_batching_is_real(client, served):
    def observed():
        return {m: s["batch_sizes"] for m, s in client.get("/v1/stats").json().items()}

    before = observed()["student"]

    async def burst():
        async with httpx.AsyncClient(
            base_url=served.url, headers=served.auth, timeout=30, trust_env=False
        ) as c:
            return await asyncio.gather(*(
                c.post("/v1/classify", json={"texts": [f"{TEXTS[i % 4]} {i}"]}) for i in range(32)
            ))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 32
    after = observed()["student"]
    new = {int(k): v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
    assert sum(k * v for k, v in new.items()) == 32  # every text went through a batch once
    assert max(new) > 1, f"no batch held more than one text: {new}"
    assert max(int(k) for k in after) <= 8  # never more than max_batch_size texts


def _raw(client, body: bytes, ctype="application/json", **kw):
    # the client sends the bearer token; this only sets the content type
    return client.post("/v1/classify", content=body, headers={"Content-Type": ctype}, **kw)


BAD_REQUESTS = [
    ("invalid json", lambda c: _raw(c, b"{not json"), 400, "not valid JSON"),
    ("invalid utf-8", lambda c: _raw(c, b'{"texts": ["\xff\xfe"]}'), 400, "not valid JSON"),
    ("deep nesting", lambda c: _raw(c, b"[" * 3000), 400, "not valid JSON"),
    ("wrong content type", lambda c: _raw(c, b'{"texts": ["a"]}', "text/plain"), 415, "application/json"),
    ("no content type", lambda c: _raw(c, b'{"texts": ["a"]}', ""), 415, "application/json"),
    ("body not an object", lambda c: c.post("/v1/classify", json=["a"]), 422, "JSON object"),
    ("texts missing", lambda c: c.post("/v1/classify", json={}), 422, "texts"),
    ("texts a string", lambda c: c.post("/v1/classify", json={"texts": "a"}), 422, "texts"),
    ("texts null", lambda c: c.post("/v1/classify", json={"texts": None}), 422, "texts"),
    ("non-string text", lambda c: c.post("/v1/classify", json={"texts": ["a", 3]}), 422, "texts.1"),
    ("lone surrogate", lambda c: _raw(c, b'{"texts": ["ok", "bad \\ud800 text"]}'), 422,
     "texts.1 is not valid Unicode text (a lone surrogate at character 4)"),
    ("empty list", lambda c: c.post("/v1/classify", json={"texts": []}), 422, "texts"),
    ("unknown model", lambda c: c.post("/v1/classify", json={"texts": ["a"], "model": "x"}), 422,
     "model: Input should be 'student' or 'teacher'"),
    ("extra field", lambda c: c.post("/v1/classify", json={"texts": ["a"], "temp": 1}), 422, "temp"),
    ("too many texts", lambda c: c.post("/v1/classify", json={"texts": ["a"] * 17}), 413,
     "max_texts_per_request"),
    ("text too long", lambda c: c.post("/v1/classify", json={"texts": ["a", "b" * 501]}), 413,
     "max_chars_per_text"),
    ("body too large", lambda c: c.post("/v1/classify", json={"texts": ["c" * 450] * 10}), 413,
     "max_body_bytes"),
    ("chunked body too large", lambda c: _raw(c, iter([b'{"texts": ["', b"d" * 5000, b'"]}'])),
     413, "max_body_bytes"),
    ("wrong method", lambda c: c.get("/v1/classify"), 405, ""),
    ("unknown path", lambda c: c.get("/v1/nothing"), 404, ""),
]


@pytest.mark.ray
def test_bad_input_gets_a_clear_4xx_and_good_requests_still_work(client):
    failures = []
    for name, send, status, fragment in BAD_REQUESTS:
        r = send(client)
        body = r.json()  # always JSON, never an HTML error page
        if r.status_code != status or fragment not in json.dumps(body):
            failures.append(f"{name}: {r.status_code} {body}")
    assert not failures, "\n".join(failures)
    ok = client.post("/v1/classify", json={"texts": ["still works"], "model": "teacher"})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


@pytest.mark.ray
def test_token_is_required(served):
    with httpx.Client(base_url=served.url, timeout=30, trust_env=False) as anon:
        for path in ("/v1/models", "/v1/stats"):
            assert anon.get(path).status_code == 401
        body = {"texts": ["a"]}
        assert anon.post("/v1/classify", json=body).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert anon.post("/v1/classify", json=body, headers=wrong).status_code == 401
        assert anon.post("/v1/classify", json=body, headers=served.auth).status_code == 200
        # the page, the docs and the health check stay open
        assert anon.get("/").status_code == 200 and "Classify" in anon.get("/").text
        assert anon.get("/page/app.js").status_code == 200
        docs = anon.get("/docs")
        assert docs.status_code == 200 and "cdn" not in docs.text  # Swagger UI from local files
        assert "/docs-assets/swagger-ui-bundle.js" in docs.text
        assert anon.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
        assert anon.get("/favicon.ico").headers["content-type"] == "image/png"
        assert "/v1/classify" in anon.get("/openapi.json").json()["paths"]
        assert anon.get("/healthz").status_code == 200


@pytest.mark.ray
def test_serve_config_yaml_is_deployable(served, tiny_run):
    from ray.serve.schema import ServeDeploySchema

    written = yaml.safe_load((tiny_run / "serve_config.yaml").read_text())
    schema = ServeDeploySchema.parse_obj(written)
    app = schema.applications[0]
    assert app.import_path == "raydistill.serve.app:build_app"
    assert app.args["run_dir"] == str(tiny_run.resolve())
    assert written["http_options"]["host"] == "127.0.0.1"
    assert served.token not in (tiny_run / "serve_config.yaml").read_text()


@pytest.mark.ray
def test_slow_or_broken_model_gives_503_not_a_hang(served, tiny_run):
    from ray import serve

    from raydistill.serve.gateway import Gateway

    # Defined here so Ray pickles it by value (the test module is not importable in replicas).
    quick = {"ray_actor_options": {"num_cpus": 0.05}, "graceful_shutdown_timeout_s": 0.5,
             "graceful_shutdown_wait_loop_s": 0.1}

    @serve.deployment(**quick)
    class Flaky:
        async def __call__(self, texts):
            if texts[0] == "boom":
                raise RuntimeError("model crashed")
            await asyncio.sleep(30)

        async def info(self):
            await asyncio.sleep(30)

    limits = {"request_timeout_s": 1.0}
    app = Gateway.options(**quick).bind({"student": Flaky.bind()}, limits)
    serve.run(app, name="flaky", route_prefix="/flaky")
    try:
        url = f"{served.url}/flaky"
        slow = httpx.post(f"{url}/v1/classify", json={"texts": ["a"]}, timeout=20, trust_env=False)
        assert slow.status_code == 503 and "did not answer within 1 s" in slow.json()["error"]
        boom = httpx.post(f"{url}/v1/classify", json={"texts": ["boom"]}, timeout=20, trust_env=False)
        assert boom.status_code == 503 and "unavailable" in boom.json()["error"]
        health = httpx.get(f"{url}/healthz", timeout=20, trust_env=False)
        assert health.status_code == 503 and health.json()["models"] == {"student": False}
    finally:
        serve.delete("flaky")


@pytest.mark.ray
def test_stalled_clients_neither_block_good_requests_nor_health(served, client):
    """300 clients send headers for a body that never comes and keep their sockets open: good
    requests and /healthz still answer, and a stalled client gets a 408 after
    serve.body_timeout_s instead of holding a Gateway slot for ever."""
    import socket
    from concurrent.futures import ThreadPoolExecutor

    host, port = served.url.removeprefix("http://").split(":")
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {served.token}\r\nContent-Length: 200\r\n\r\n").encode()
    stalled = []
    try:
        for _ in range(300):
            sock = socket.create_connection((host, int(port)), timeout=30)
            sock.sendall(head + b'{"texts": [')
            stalled.append(sock)
        time.sleep(1.0)  # every stalled request has reached the Gateway and waits for its body

        def good(i: int) -> int:
            return client.post("/v1/classify", json={"texts": [TEXTS[i % 2]]}).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(good, range(40)))
        health = httpx.get(f"{served.url}/healthz", timeout=30, trust_env=False)
        assert codes.count(200) == 40, codes
        assert health.status_code == 200
        stalled[0].settimeout(30)
        answer = b""  # within body_timeout_s (10 s); headers and body may come in two segments
        while b"serve.body_timeout_s" not in answer and (chunk := stalled[0].recv(4096)):
            answer += chunk
        text = answer.decode(errors="replace")
        assert text.startswith("HTTP/1.1 408") and "serve.body_timeout_s" in text, text[:300]
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.ray
def test_oversized_headers_get_431(client):
    answer = client.post("/v1/classify", json={"texts": ["fine"]}, headers={"X-Padding": "a" * 20_000})
    assert answer.status_code == 431 and "limit is 16384" in answer.json()["error"]
    assert client.post("/v1/classify", json={"texts": ["fine"]}, headers={"X-Padding": "a" * 1000}).status_code == 200


def _running_gateways() -> int:
    from ray import serve

    from raydistill.serve.app import APP_NAME

    deployment = serve.status().applications[APP_NAME].deployments["Gateway"]
    return deployment.replica_states.get("RUNNING", 0)


@pytest.mark.ray
def test_a_killed_gateway_replica_costs_no_request(served):
    """Two Gateway replicas: SIGKILL one under load and /healthz keeps answering from the other
    at once; the requests the dead one held fail at Serve's proxy (it does not retry a POST in
    flight) and a client retrying those idempotent calls once loses none."""
    import threading

    import ray

    from raydistill.serve.app import APP_NAME
    from raydistill.serve.loadgen import run_load

    assert _running_gateways() == 2
    result = {}
    load = threading.Thread(target=lambda: result.update(run_load(
        served.url, "student", TEXTS, 8, max_requests=1500, max_seconds=20, token=served.token, retries=1)))
    load.start()
    time.sleep(2.0)
    name = next(n["name"] for n in ray.util.list_named_actors(all_namespaces=True)
                if n["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#Gateway#"))
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    health = []
    for _ in range(30):  # 3 s right after the kill
        health.append(httpx.get(f"{served.url}/healthz", timeout=10, trust_env=False).status_code)
        time.sleep(0.1)
    load.join(timeout=120)
    assert health == [200] * 30, health
    assert result["requests"] >= 100 and result["errors"] == 0, result
    print(f"gateway kill: {result['ok']} of {result['requests']} requests answered, "
          f"{result['retried']} retried once")
    deadline = time.monotonic() + 90
    while _running_gateways() < 2:  # Serve replaces it: later tests get two again
        assert time.monotonic() < deadline, "Serve did not replace the killed Gateway"
        time.sleep(1)


@pytest.mark.ray
def test_one_client_may_hold_only_its_share_of_requests(served):
    """With serve.max_requests_per_client, a client's requests beyond the cap get a JSON 429
    at once instead of queueing behind its own; once one answers, the next is accepted."""
    from concurrent.futures import ThreadPoolExecutor

    from ray import serve

    from raydistill.serve.gateway import Gateway

    quick = {"ray_actor_options": {"num_cpus": 0.05}, "graceful_shutdown_timeout_s": 0.5,
             "graceful_shutdown_wait_loop_s": 0.1}

    @serve.deployment(**quick)
    class Slow:  # defined here so Ray pickles it by value
        async def __call__(self, texts):
            await asyncio.sleep(2.0)
            return [{"label": "positive", "score": 0.9} for _ in texts]

    limits = {"max_requests_per_client": 2}
    serve.run(Gateway.options(**quick).bind({"student": Slow.bind()}, limits), name="capped", route_prefix="/capped")
    try:
        url = f"{served.url}/capped/v1/classify"

        def post(_):
            return httpx.post(url, json={"texts": ["a"]}, timeout=30, trust_env=False)

        with ThreadPoolExecutor(3) as pool:
            first = [pool.submit(post, i) for i in range(2)]
            time.sleep(0.5)  # both are in flight, waiting on the slow model
            third = post(2)
            codes = sorted(f.result().status_code for f in first)
        assert codes == [200, 200]
        assert third.status_code == 429 and "serve.max_requests_per_client" in third.json()["error"]
        assert post(3).status_code == 200  # the earlier ones answered: a slot is free again
    finally:
        serve.delete("capped")
