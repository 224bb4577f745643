"""Inference precision on tiny random BERTs, no network: int8 quantises the encoder's Linear
layers and nothing else, stays close to fp32, and the Predictor runs it end to end; bf16 off
CUDA and unknown precisions are refused with a ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raydistill.platform import precision as P
from raydistill.platform.config import TeacherConfig, TokenizerConfig
from raydistill.platform.errors import ConfigError
from raydistill.platform.models import build_teacher, save_classifier

pytestmark = pytest.mark.unit

CFG = TeacherConfig(num_layers=2, hidden_size=64, num_heads=4, intermediate_size=128, dropout=0.0)
SENTENCES = ["a warm and funny film", "the plot is thin", "two hours i will never get back",
             "beautifully shot and wonderfully acted, with a cast that never puts a foot wrong",
             "dull", "smart, tender and never dull"]


def _model() -> torch.nn.Module:
    return build_teacher(CFG, num_labels=3, vocab_size=200, max_length=32, seed=7).eval()


def _batch(rows: int = 64, length: int = 24) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, 200, (rows, length), generator=torch.Generator().manual_seed(0))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.inference_mode():
        return model(**batch).logits.float()


def test_int8_quantises_the_encoder_linears_and_keeps_the_head_and_the_original() -> None:
    model = _model()
    int8 = P.with_precision(model, "int8")
    linears = {name: type(m) for name, m in int8.named_modules()
               if isinstance(m, (torch.nn.Linear, torch.ao.nn.quantized.dynamic.Linear))}
    encoder = {name for name in linears if name.startswith("bert.encoder.")}
    assert len(encoder) == 6 * CFG.num_layers  # query, key, value, attention output, FFN in/out
    assert all(issubclass(linears[name], torch.ao.nn.quantized.dynamic.Linear) for name in encoder)
    assert {name: linears[name] for name in set(linears) - encoder} == {
        "bert.pooler.dense": torch.nn.Linear, "classifier": torch.nn.Linear}
    assert type(int8.bert.embeddings.word_embeddings) is torch.nn.Embedding
    assert all(type(m) is torch.nn.Linear for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_int8_activations_use_8_bits_only_where_the_cpu_has_vnni(monkeypatch) -> None:
    for vnni, expected in ((True, P.Int8Linear), (False, torch.ao.nn.quantized.dynamic.Linear)):
        monkeypatch.setattr(P, "full_range_activations", lambda vnni=vnni: vnni)
        layer = P.with_precision(_model(), "int8").bert.encoder.layer[0].output.dense
        assert type(layer) is expected


def test_int8_logits_stay_close_to_fp32_and_predictions_agree() -> None:
    model, batch = _model(), _batch()
    fp32 = _logits(model, batch)
    int8 = _logits(P.with_precision(model, "int8"), batch)
    assert not torch.equal(int8, fp32)  # it really ran quantised
    scale = fp32.abs().max()
    assert (int8 - fp32).abs().max() < 0.05 * scale
    assert (int8.argmax(-1) == fp32.argmax(-1)).float().mean() >= 0.9


def test_8_bit_activations_are_closer_to_fp32_than_7(monkeypatch) -> None:
    model, batch = _model(), _batch()
    fp32 = _logits(model, batch)
    errors = {}
    for vnni in (True, False):
        monkeypatch.setattr(P, "full_range_activations", lambda vnni=vnni: vnni)
        errors[vnni] = (_logits(P.with_precision(model, "int8"), batch) - fp32).pow(2).mean()
    assert errors[True] < errors[False]


def test_fp32_is_the_model_itself() -> None:
    model = _model()
    assert P.with_precision(model, "fp32") is model


def test_bf16_on_a_cpu_and_unknown_precisions_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="bf16 needs a CUDA GPU"):
        P.with_precision(_model(), "bf16")
    with pytest.raises(ConfigError, match="'fp16' is not one of fp32, int8, bf16"):
        P.with_precision(_model(), "fp16")


def test_int8_needs_an_encoder() -> None:
    with pytest.raises(ConfigError, match="encoder"):
        P.with_precision(torch.nn.Sequential(torch.nn.Linear(4, 2)), "int8")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from raydistill.platform.text import build_tokenizer

    tokenizer = build_tokenizer(TokenizerConfig(vocab_size=120, max_length=24), SENTENCES)
    model = build_teacher(CFG, num_labels=3, vocab_size=len(tokenizer), max_length=24, seed=5)
    path = tmp_path_factory.mktemp("precision") / "model"
    save_classifier(model, path, tokenizer)
    return path


def test_the_predictor_runs_int8_end_to_end(model_dir) -> None:
    from raydistill.serve.predictor import Predictor

    fp32 = Predictor(model_dir, device="cpu", chunk_size=2)
    int8 = Predictor(model_dir, device="cpu", chunk_size=2, precision="int8")
    assert int8.precision == "int8" and int8.num_parameters == fp32.num_parameters
    assert isinstance(int8.model.bert.encoder.layer[0].intermediate.dense, torch.ao.nn.quantized.dynamic.Linear)
    a, b = fp32.logits(SENTENCES), int8.logits(SENTENCES)
    assert a.shape == b.shape == (len(SENTENCES), 3) and not torch.equal(a, b)
    torch.testing.assert_close(b, a, atol=0.05 * float(a.abs().max()), rtol=0)
    predictions = int8.predict(SENTENCES)
    assert [p["label"] for p in predictions] == [fp32.labels[i] for i in a.argmax(-1).tolist()]
    with pytest.raises(ConfigError, match="bf16"):
        Predictor(model_dir, device="cpu", precision="bf16")
