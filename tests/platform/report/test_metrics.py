"""The one evaluation against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from raydistill.platform import metrics as M
from raydistill.platform.errors import CheckpointError, DataError
from raydistill.platform.report.run_files import count_safetensors_params

pytestmark = pytest.mark.unit


def test_ece_macro_f1_accuracy_against_hand_values() -> None:
    probs = np.array([[0.9, 0.1], [0.35, 0.65], [0.25, 0.75], [0.45, 0.55], [0.92, 0.08]])
    labels = np.array([0, 0, 1, 0, 1])
    # confidences 0.9, 0.65, 0.75, 0.55, 0.92; bins of 1/15: {0.9, 0.92} share (13/15, 14/15]
    # bin accuracy 1/2, confidence 0.91 -> 2/5 * 0.41; the others 1/5 * (0.65 + 0.25 + 0.55)
    assert M.expected_calibration_error(probs, labels) == pytest.approx((2 * 0.41 + 1.45) / 5)
    m = M.evaluate(np.log(probs), labels)
    assert m[M.ECE] == pytest.approx(0.454)
    assert m[M.ACCURACY] == pytest.approx(2 / 5)
    # preds 0 1 1 1 0: class 0 tp1 fp1 fn2 -> 2/5; class 1 tp1 fp2 fn1 -> 2/5
    assert m[M.MACRO_F1] == pytest.approx(0.4)
    preds, labels3 = np.array([0, 1, 1, 2, 2, 0]), np.array([0, 0, 1, 2, 2, 2])
    # class 0: 2/(2+1+1); class 1: 2/(2+1); class 2: 4/(4+1)
    assert M.f1_per_class(preds, labels3) == pytest.approx({0: 0.5, 1: 2 / 3, 2: 0.8})
    assert M.macro_f1(preds, labels3) == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    perfect = np.eye(3)[labels3] * 50.0
    assert M.evaluate(perfect, labels3)[M.ECE] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(CheckpointError, match="do not match"):
        M.evaluate(perfect, labels3[:2])
    with pytest.raises(DataError, match="zero examples"):
        M.evaluate(perfect[:0], labels3[:0])


def test_evaluate_loss_fidelity_and_the_names_train_reports() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0], [0.5, 0.0]], dtype=np.float32)
    labels = np.array([0, 1, 0, 1])
    teacher = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    m = M.evaluate(logits, labels, teacher)
    ce = -np.log(M.softmax(logits)[np.arange(4), labels]).mean()
    assert m[M.LOSS] == pytest.approx(ce, rel=1e-6)
    assert m[M.ACCURACY] == 0.5 and m[M.FIDELITY] == 0.75
    assert M.reported(m) == {M.VAL_ACCURACY: 0.5, M.VAL_LOSS: m[M.LOSS], M.FIDELITY: 0.75}
    assert M.FIDELITY not in M.evaluate(logits, labels)
    # float32, as Tune has always reported it: the results files stay comparable across versions
    third = M.evaluate(logits[:3], labels[:3])[M.ACCURACY]
    assert third == float(np.float32(2 / 3)) and third != 2 / 3
    assert M.softmax(np.array([[1000.0, 1000.0]]))[0] == pytest.approx([0.5, 0.5])


def test_count_safetensors_params_reads_only_the_header(tmp_path: Path) -> None:
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
                         "b": {"dtype": "F32", "shape": [5], "data_offsets": [48, 68]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(68))
    assert count_safetensors_params(tmp_path) == 17
    assert count_safetensors_params(tmp_path / "absent") is None
