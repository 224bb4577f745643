"""Bulk prediction on Ray Data (``raydistill predict``): a table in, the same table with each
text's label and probabilities out, in input order, with the answers the HTTP API gives."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from raydistill.cli import main
from raydistill.platform.errors import ConfigError, DataError
from raydistill.serve.predictor import Predictor
from raydistill.trainables.bulk_predict import predict_file

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

TEXTS = ["a warm and moving film", "two hours i will never get back", "", "smart, funny and sharp",
         "tedious, overlong\nand oddly joyless", "one of the best thrillers in years"] * 7  # 42 rows: empty, line breaks


@pytest.fixture
def table(tmp_path) -> pd.DataFrame:
    return pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS, "source": ["web"] * len(TEXTS)})


@pytest.mark.parametrize("suffix_in, suffix_out", [(".csv", ".jsonl"), (".jsonl", ".parquet"), (".parquet", ".csv")])
def test_every_row_gets_the_labels_the_api_gives_in_input_order(ray_cluster, tiny_run, table, tmp_path,
                                                                  suffix_in, suffix_out) -> None:
    source, target = tmp_path / f"in{suffix_in}", tmp_path / f"out{suffix_out}"
    {".csv": lambda: table.to_csv(source, index=False),
     ".jsonl": lambda: table.to_json(source, orient="records", lines=True),
     ".parquet": lambda: table.to_parquet(source, index=False)}[suffix_in]()
    out = predict_file(tiny_run, source, target, model="student")
    assert out["rows"] == len(TEXTS) and out["texts_per_s"] > 0
    got = {".csv": lambda: pd.read_csv(target, keep_default_na=False),
           ".jsonl": lambda: pd.read_json(target, lines=True),
           ".parquet": lambda: pd.read_parquet(target)}[suffix_out]()
    assert list(got["id"]) == list(range(len(TEXTS)))  # input order, input columns kept
    assert set(got["source"]) == {"web"}
    expected = Predictor(tiny_run / "student").predict([str(t) for t in TEXTS])
    assert list(got["label"]) == [e["label"] for e in expected]
    assert got["score"].tolist() == pytest.approx([e["score"] for e in expected], abs=1e-6)
    for name in expected[0]["scores"]:
        assert got[f"score_{name}"].tolist() == pytest.approx([e["scores"][name] for e in expected], abs=1e-6)
    assert not list(tmp_path.glob(".*partial"))  # written beside the target, then renamed


def test_int8_and_the_teacher_and_the_cli(ray_cluster, tiny_run, table, tmp_path, capsys) -> None:
    source = tmp_path / "in.csv"
    table.to_csv(source, index=False)
    target = tmp_path / "out.csv"
    assert main(["predict", str(tiny_run), "--input", str(source), "--output", str(target),
                 "--model", "teacher", "--precision", "int8"]) == 0
    assert "42 rows labelled by the teacher (int8)" in capsys.readouterr().out
    got = pd.read_csv(target)
    expected = Predictor(tiny_run / "teacher", precision="int8").predict([str(t) for t in TEXTS])
    assert list(got["label"]) == [e["label"] for e in expected]
    # an existing output is kept unless --force
    assert main(["predict", str(tiny_run), "--input", str(source), "--output", str(target)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["predict", str(tiny_run), "--input", str(source), "--output", str(target), "--force"]) == 0


def test_bad_inputs_are_one_clear_error(ray_cluster, tiny_run, table, tmp_path) -> None:
    source = tmp_path / "in.csv"
    table.rename(columns={"text": "review"}).to_csv(source, index=False)
    with pytest.raises(DataError, match="no column 'text'.*--text-column"):
        predict_file(tiny_run, source, tmp_path / "out.csv")
    out = predict_file(tiny_run, source, tmp_path / "out.csv", text_column="review")
    assert out["rows"] == len(TEXTS)
    with pytest.raises(DataError, match="input file not found"):
        predict_file(tiny_run, tmp_path / "absent.csv", tmp_path / "x.csv")
    (tmp_path / "in.txt").write_text("text\nhello\n")
    with pytest.raises(DataError, match="use a .csv, .jsonl or .parquet file"):
        predict_file(tiny_run, tmp_path / "in.txt", tmp_path / "x.csv")
    with pytest.raises(ConfigError, match="no 'tutor' model"):
        predict_file(tiny_run, source, tmp_path / "y.csv", model="tutor")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError):
        predict_file(tiny_run, tmp_path / "empty.jsonl", tmp_path / "z.csv")
    assert not (tmp_path / "z.csv").exists()
    json.dumps(out)  # the summary is plain JSON
