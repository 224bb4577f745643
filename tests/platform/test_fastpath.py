"""The fast paths of the config's ``performance`` section, checked on a CPU: SDPA and eager
attention agree, ``torch.compile`` changes no logits, and the CUDA-only decisions (bf16
autocast, fused AdamW, pinned memory, the device itself) are taken on a ``torch.device("cuda")``
object without a GPU. Plus the config round trip and the ``--resume --set`` guard."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from raydistill.platform import fastpath
from raydistill.platform.config import (
    PerformanceConfig,
    TeacherConfig,
    TokenizerConfig,
    config_from_dict,
    dump_config,
    fields_set,
    load_config,
)
from raydistill.platform.errors import ConfigError
from raydistill.platform.models import build_teacher, load_classifier, predict_logits, save_classifier, unwrap

pytestmark = pytest.mark.unit

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object: no GPU is touched
CFG = TeacherConfig(num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64)
SENTENCES = ["a warm and funny film", "the plot is thin", "two hours i will never get back",
             "beautifully shot and wonderfully acted, with a cast that never puts a foot wrong",
             "dull", "smart, tender and never dull"]


def _teacher(attention: str | None = None, dropout: float = 0.1):
    cfg = CFG.model_copy(update={"dropout": dropout})
    return build_teacher(cfg, num_labels=3, vocab_size=60, max_length=24, seed=3,
                         attn_implementation=attention).eval()


def _padded_batches(batch_size: int = 4) -> list[dict[str, torch.Tensor]]:
    """Two batches of different widths, each row padded (mask 0) to its batch's longest."""
    gen = torch.Generator().manual_seed(0)
    lengths = [5, 9, 12, 3, 17, 8, 20, 11]
    batches = []
    for start in range(0, len(lengths), batch_size):
        rows = lengths[start:start + batch_size]
        width = max(rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, n in enumerate(rows):
            ids[r, :n] = torch.randint(5, 60, (n,), generator=gen)
            mask[r, :n] = 1
        batches.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
                        "labels": torch.zeros(len(rows), dtype=torch.long),
                        "index": torch.arange(start, start + len(rows))})
    return batches


# --- attention -------------------------------------------------------------------------------


def test_sdpa_and_eager_attention_give_the_same_logits(tmp_path) -> None:
    sdpa, eager = _teacher("sdpa"), _teacher("eager")
    assert sdpa.config._attn_implementation == "sdpa" and eager.config._attn_implementation == "eager"
    assert all(torch.equal(a, b) for a, b in zip(sdpa.state_dict().values(), eager.state_dict().values()))
    a = predict_logits(sdpa, _padded_batches(), CPU)
    b = predict_logits(eager, _padded_batches(), CPU)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # Loading a saved classifier honours the switch too (it is not stored in config.json).
    save_classifier(sdpa, tmp_path / "m")
    for attention in ("eager", "sdpa"):
        loaded = load_classifier(tmp_path / "m", attention)
        assert loaded.config._attn_implementation == attention
        torch.testing.assert_close(predict_logits(loaded, _padded_batches(), CPU), a, atol=1e-5, rtol=1e-5)


def test_a_student_inherits_the_teachers_attention() -> None:
    from raydistill.platform.layers import build_student

    student, _ = build_student(_teacher("eager"), "bottom", 1, None, seed=0)
    assert student.config._attn_implementation == "eager"


def test_attention_comes_from_the_section() -> None:
    assert fastpath.attn_implementation(None) == "sdpa"
    assert fastpath.attn_implementation({"attention": "eager"}) == "eager"


# --- torch.compile ---------------------------------------------------------------------------


def test_compile_off_returns_the_model_itself_and_unwrap_strips_a_compiled_one(tmp_path) -> None:
    model = _teacher()
    assert fastpath.maybe_compile(model, PerformanceConfig()) is model
    compiled = fastpath.maybe_compile(model, PerformanceConfig(compile=True))  # lazy: compiles on first call
    assert compiled is not model and unwrap(compiled) is model
    assert list(compiled.parameters()) == list(model.parameters())  # same tensors: training one trains both
    save_classifier(compiled, tmp_path / "m")  # no "_orig_mod." prefixes on disk
    torch.testing.assert_close(predict_logits(load_classifier(tmp_path / "m"), _padded_batches(), CPU),
                               predict_logits(model, _padded_batches(), CPU))


def _inductor_unavailable() -> str | None:
    import importlib

    try:
        importlib.import_module("torch._inductor")
    except Exception as err:  # noqa: BLE001
        return f"torch inductor cannot be imported: {err}"
    compilers = [os.environ.get("CXX"), "g++", "c++", "clang++"]
    if not any(c and shutil.which(c) for c in compilers):
        return "torch.compile on a CPU needs a C++ compiler (g++, c++ or clang++ on PATH)"
    return None


@pytest.mark.slow  # inductor compiles a BERT forward: ~25 s with its disk cache warm, ~65 s cold (2 busy cores)
@pytest.mark.skipif(_inductor_unavailable() is not None, reason=str(_inductor_unavailable()))
def test_compiled_model_gives_the_same_logits_as_eager() -> None:
    """Dynamic shapes: two batch widths, one compilation, the same logits as the eager model."""
    model = _teacher("sdpa")
    expected = predict_logits(model, _padded_batches(), CPU)
    compiled = fastpath.maybe_compile(model, PerformanceConfig(compile=True))
    got = predict_logits(compiled, _padded_batches(), CPU)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not model.training  # predict_logits restored the mode through the wrapper


# --- autocast ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bf16", [True, False])
def test_autocast_is_a_no_op_on_cpu(bf16) -> None:
    perf = PerformanceConfig(bf16=bf16)
    assert fastpath.autocast_dtype(CPU, perf) is None
    with fastpath.autocast_context(CPU, perf):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_autocast_asks_for_bfloat16_on_cuda_only_when_bf16_is_on(monkeypatch) -> None:
    assert fastpath.autocast_dtype(CUDA, PerformanceConfig(bf16=True)) is torch.bfloat16
    assert fastpath.autocast_dtype(CUDA, None) is torch.bfloat16  # the default, as before the switch
    assert fastpath.autocast_dtype(CUDA, {"bf16": False}) is None
    asked = []
    monkeypatch.setattr(fastpath.torch, "autocast", lambda device_type, dtype: asked.append((device_type, dtype)) or "ctx")
    assert fastpath.autocast_context(CUDA, PerformanceConfig(bf16=True)) == "ctx"
    assert asked == [("cuda", torch.bfloat16)]
    off = fastpath.autocast_context(CUDA, PerformanceConfig(bf16=False))
    assert asked == [("cuda", torch.bfloat16)] and not isinstance(off, str)  # a null context, no autocast


# --- fused AdamW -------------------------------------------------------------------------------


@pytest.mark.parametrize("device, enabled, fused", [(CUDA, True, True), (CUDA, False, None),
                                                     (CPU, True, None), (CPU, False, None)])
def test_the_optimizer_is_fused_only_on_cuda_when_enabled(device, enabled, fused) -> None:
    params = [torch.nn.Parameter(torch.randn(4, 3))]  # CPU tensors: torch builds a fused AdamW for them too
    opt = fastpath.make_optimizer(params, 1e-3, 0.01, device, PerformanceConfig(fused_adamw=enabled))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["fused"] is fused
    assert opt.defaults["lr"] == 1e-3 and opt.defaults["weight_decay"] == 0.01


def test_a_cpu_step_equals_plain_adamw_bit_for_bit() -> None:
    a, b = _teacher(), _teacher()
    mine = fastpath.make_optimizer(a.parameters(), 3e-3, 0.01, CPU, PerformanceConfig())
    plain = torch.optim.AdamW(b.parameters(), lr=3e-3, weight_decay=0.01)
    batch = _padded_batches()[0]
    for model, opt in ((a, mine), (b, plain)):
        model.train()
        for _ in range(3):
            torch.manual_seed(0)  # the same dropout masks
            loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         labels=batch["labels"]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(x, y), name


def test_a_restored_optimizer_keeps_this_process_kernels() -> None:
    """A checkpoint written by a fused (GPU) optimizer, resumed on a CPU: the CPU's choice stays."""
    params = [torch.nn.Parameter(torch.randn(3))]
    saved = fastpath.make_optimizer(params, 1e-3, 0.0, CUDA, None).state_dict()
    assert saved["param_groups"][0]["fused"] is True
    here = fastpath.make_optimizer(params, 1e-3, 0.0, CPU, None)
    fastpath.restore_optimizer(here, saved)
    assert here.param_groups[0]["fused"] is None and here.param_groups[0]["lr"] == 1e-3


# --- pinned memory, devices --------------------------------------------------------------------


def test_loader_kwargs_pin_memory_only_for_cuda(tmp_path) -> None:
    from raydistill.platform.data import Split
    from raydistill.platform.text import build_tokenizer, encode, make_loader

    assert fastpath.loader_kwargs(CUDA, PerformanceConfig()) == {"pin_memory": True}
    assert fastpath.loader_kwargs(CUDA, PerformanceConfig(pin_memory=False)) == {"pin_memory": False}
    assert fastpath.loader_kwargs(CPU, PerformanceConfig(pin_memory=True)) == {"pin_memory": False}
    tokenizer = build_tokenizer(TokenizerConfig(vocab_size=120, max_length=16), SENTENCES)
    import numpy as np

    enc = encode(tokenizer, Split(SENTENCES, np.zeros(len(SENTENCES), dtype=np.int64)), 16)
    loader = make_loader(enc, 4, **fastpath.loader_kwargs(CPU, None))
    assert loader.pin_memory is False
    batch = next(iter(loader))
    assert not batch["input_ids"].is_pinned()
    moved = fastpath.to_device(batch["input_ids"], CPU, None)  # a CPU copy never pins
    assert moved is batch["input_ids"]


def test_cpu_is_chosen_whenever_torch_sees_no_cuda(monkeypatch) -> None:
    """A (fractional) GPU from Ray on a node without CUDA: the CPU, and Ray's device is not asked."""
    from raydistill.trainables.student_trial import _device

    def ray_device():
        raise AssertionError("asked Ray for a CUDA device torch cannot use")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert fastpath.select_device(True, ray_device) == CPU
    assert _device(config_from_dict({"sweep": {"gpus_per_trial": 0.5}})) == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert fastpath.select_device(True, lambda: torch.device("cuda:1")) == torch.device("cuda:1")
    assert fastpath.select_device(True) == CUDA
    assert fastpath.select_device(False, ray_device) == CPU  # no GPU asked for: CPU, even with CUDA


# --- serving -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from raydistill.platform.text import build_tokenizer

    tokenizer = build_tokenizer(TokenizerConfig(vocab_size=120, max_length=24), SENTENCES)
    cfg = CFG.model_copy(update={"dropout": 0.1})
    model = build_teacher(cfg, num_labels=3, vocab_size=len(tokenizer), max_length=24, seed=5)
    path = tmp_path_factory.mktemp("fastpath") / "model"
    save_classifier(model, path, tokenizer)
    return path


def test_the_predictor_takes_the_switches_and_pads_each_chunk_alone(model_dir) -> None:
    from raydistill.serve.predictor import Predictor

    sdpa = Predictor(model_dir, performance={"attention": "sdpa"}, chunk_size=2)
    eager = Predictor(model_dir, performance=PerformanceConfig(attention="eager", compile=False))
    assert sdpa.model.config._attn_implementation == "sdpa"
    assert eager.model.config._attn_implementation == "eager" and eager.device == CPU
    together = sdpa.logits(SENTENCES)  # length-sorted chunks of 2, each padded to its longest
    alone = torch.cat([sdpa.logits([text]) for text in SENTENCES])  # no padding at all
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eager.logits(SENTENCES), together, atol=1e-5, rtol=1e-5)


# --- config ------------------------------------------------------------------------------------


def test_the_performance_section_round_trips(tmp_path) -> None:
    assert config_from_dict({}).performance == PerformanceConfig(
        bf16=True, fused_adamw=True, compile=False, attention="sdpa", pin_memory=True)
    cfg = config_from_dict({"name": "fast"}, ["performance.compile=true", "performance.attention=eager",
                                              "performance.bf16=false"])
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg and again.performance.compile and again.performance.attention == "eager"
    assert fields_set(again)["performance"] == {"compile": True, "attention": True, "bf16": True}
    assert fastpath.performance(cfg.performance.model_dump()) == cfg.performance  # as a replica gets it
    with pytest.raises(ConfigError, match=r"performance\.attention"):
        config_from_dict({"performance": {"attention": "flash"}})
    with pytest.raises(ConfigError, match=r"performance\.fused"):
        config_from_dict({"performance": {"fused": True}})


@pytest.fixture
def built_run(tmp_path):
    from raydistill.platform.rundir import RunDir

    run = RunDir(tmp_path / "study-20261201-000000")
    run.root.mkdir(parents=True)
    run.config.write_text(dump_config(config_from_dict({"name": "study"})))
    run.legacy_stages.write_text(json.dumps({"teacher": {"finished": "2026-12-01T00:00:00", "labeled": [1, 2]}}))
    run.tune_experiment.mkdir(parents=True)  # the sweep has started too
    return run


@pytest.mark.parametrize("override", ["performance.compile=true", "performance.attention=eager",
                                      "performance.bf16=false", "performance.fused_adamw=false",
                                      "performance.pin_memory=false"])
def test_resume_may_change_the_fast_paths_of_a_built_run(built_run, override) -> None:
    from raydistill.pipeline import _stage_inputs, open_run
    from raydistill.platform.config import STAGE_INPUTS

    _, cfg = open_run(built_run.root, [override])
    assert load_config(built_run.config) == cfg
    key, value = override.split("=")
    assert str(getattr(cfg.performance, key.split(".")[1])).lower() == value
    assert "performance" not in {s for sections in STAGE_INPUTS.values() for s in sections}
    assert not any(k.startswith("performance.") for st in STAGE_INPUTS for k in _stage_inputs(cfg, st))


# --- one place ---------------------------------------------------------------------------------


def test_the_decisions_live_in_fastpath_only() -> None:
    """No call site builds its own AdamW, autocast or compile: they all go through fastpath."""
    root = Path(fastpath.__file__).resolve().parent.parent
    pattern = re.compile(r"torch\.optim\.AdamW\(|torch\.autocast\(|torch\.compile\(|"
                         r"torch\.cuda\.is_available\(\) else|ray\.train\.torch\.get_device\(\)")
    offenders = [f"{path.relative_to(root)}:{n}" for path in root.rglob("*.py") if path.name != "fastpath.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if pattern.search(line) and not line.lstrip().startswith(("#", "``", "\"\"\""))]
    assert offenders == []
