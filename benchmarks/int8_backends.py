"""int8 inference backends on the CPU against the project's recipe: torch, ONNX Runtime, torchao.

For each model (the run's student and teacher) every backend classifies the run's validation
texts through the serving Predictor's tokenizer and length-sorted batches of ``--batch``, on
``--threads`` threads, so that only the model's runtime differs:

- ``torch-fp32``: the Predictor as trained (the reference for every other backend);
- ``torch-int8``: the project's recipe (:mod:`raydistill.platform.precision`: per-channel
  dynamic int8 on the encoder's Linear layers, 8-bit activations with VNNI, pooler/head fp32);
- ``ort-fp32``: the model exported by ``torch.onnx.export`` and run by ONNX Runtime (all graph
  optimisations, ``intra_op_num_threads=--threads``);
- ``ort-int8``: that export through ``onnxruntime.quantization.quantize_dynamic`` (per-channel
  QInt8 weights; its activations are uint8, per tensor); pooler and head stay fp32 as in the
  recipe;
- ``torchao-int8`` and ``torchao-int8-compiled``: torchao's ``Int8DynamicActivationInt8WeightConfig``
  applied by ``quantize_`` to the encoder's Linear layers, eager and under ``torch.compile``.

A backend that cannot be built or fails on its first batch is reported with its error and left
out. After a warm-up the backends take turns every 8 batches (a shared machine's drift hits all
alike); texts/s is the median of ``--repeats`` passes. From the first pass: each backend's
validation accuracy, its agreement with torch-fp32 and its accuracy − torch-fp32 with the
report's 95% paired cluster-bootstrap interval and verdict at the run's ``report.margin``
(:func:`benchmarks.precision.compare`). Imports no Ray. The ort backends need
``pip install raydistill[onnx]``, the torchao ones ``pip install torchao``.

    python benchmarks/int8_backends.py RUN_DIR                  # all texts, 2 threads, 3 passes
    python benchmarks/int8_backends.py RUN_DIR --texts 512 --repeats 1 --backends torch-fp32 ort-int8

Writes the figures as JSON (``--out``, default ``benchmarks/results/int8_backends-cpu.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

# benchmarks/precision.py, beside this script (run as a file, like every benchmark)
from precision import MODELS, compare, timed_passes, validation_evidence

from raydistill.platform.machine import cpu_name
from raydistill.platform.metrics import correctness
from raydistill.serve.predictor import Predictor

REFERENCE = "torch-fp32"
BACKENDS = (REFERENCE, "torch-int8", "ort-fp32", "ort-int8", "torchao-int8", "torchao-int8-compiled")
PACKAGES = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "torchao")
HEAD_MODULES = ("pooler", "classifier")  # fp32 in the project's recipe, so in ort-int8 too


class Classifier(Protocol):
    """What :func:`benchmarks.precision.timed_passes` times: the Predictor's interface."""

    chunk_size: int
    labels: list[str]

    def logits(self, texts: list[str]) -> torch.Tensor: ...


class OrtClassifier:
    """An ONNX Runtime session behind the Predictor's interface, fed by a Predictor's own
    tokenizer, ``max_length`` and length-sorted chunks, so that only the runtime differs."""

    def __init__(self, onnx_path: Path, like: Predictor, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer, self.max_length = like.tokenizer, like.max_length
        self.chunk_size, self.labels = like.chunk_size, like.labels

    def logits(self, texts: list[str]) -> torch.Tensor:
        """float32 logits (N, C), row i for ``texts[i]`` (as :meth:`Predictor.logits`)."""
        from raydistill.platform.text import encode_texts

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), len(self.labels)), np.float32)
        for start in range(0, len(order), self.chunk_size):
            rows = order[start:start + self.chunk_size]
            batch = encode_texts(self.tokenizer, [texts[i] for i in rows], self.max_length)
            out[rows] = self.session.run(None, {k: batch[k].numpy() for k in self.inputs})[0]
        return torch.from_numpy(out)


def export_onnx(model: torch.nn.Module, like: Predictor, path: Path) -> Path:
    """``model`` as ONNX at ``path``, batch and sequence length dynamic (batches are padded to
    their own longest text), weights inside the file."""
    from raydistill.platform.text import encode_texts

    example = encode_texts(like.tokenizer, ["a short text", "and a somewhat longer one, for shape"],
                           like.max_length)
    names = ("input_ids", "attention_mask", "token_type_ids")
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=like.max_length)
    torch.onnx.export(model, (), str(path), kwargs={k: example[k] for k in names},
                      input_names=list(names), output_names=["logits"],
                      dynamic_shapes={k: {0: batch, 1: length} for k in names},
                      dynamo=True, external_data=False, optimize=True)
    return path


def quantize_onnx(src: Path, dst: Path) -> Path:
    """``src`` with its weight MatMuls dynamic int8 (per-channel QInt8 weights) at ``dst``. As in
    the project's recipe the embeddings (Gather, which ORT would quantise by default) and the
    pooler's and classifier's MatMuls stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(src)).graph
    head = [node.name for node in graph.node if node.op_type in ("MatMul", "Gemm")
            and any(m in name for name in node.input for m in HEAD_MODULES)]
    # ORT turns a Gemm into "<name>_MatMul" before quantising it: exclude both spellings, and check
    quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8,
                     nodes_to_exclude=head + [f"{name}_MatMul" for name in head])
    quantized = [i.name for i in onnx.load(str(dst)).graph.initializer if i.name.endswith("_quantized")]
    if leaked := [name for name in quantized if any(m in name for m in HEAD_MODULES)]:
        raise RuntimeError(f"the pooler or classifier was quantised after all: {leaked}")
    return dst


def encoder_linears(model: torch.nn.Module) -> Callable[[torch.nn.Module, str], bool]:
    """torchao's ``filter_fn`` for the Linear layers the project's recipe quantises: the encoder's."""
    encoder = model.base_model.encoder
    prefix = next(name for name, module in model.named_modules() if module is encoder) + "."
    return lambda module, fqn: isinstance(module, torch.nn.Linear) and fqn.startswith(prefix)


def build(backend: str, model_dir: Path, reference: Predictor, work: Path, threads: int,
          max_length: int, batch: int) -> Classifier:
    """``backend`` for the model in ``model_dir``; ``reference`` is its torch-fp32 Predictor."""
    if backend == REFERENCE:
        return reference
    if backend.startswith("torch-"):
        return Predictor(model_dir, device="cpu", max_length=max_length, chunk_size=batch,
                         precision=backend.removeprefix("torch-"))
    if backend.startswith("ort-"):
        fp32 = work / f"{model_dir.name}-fp32.onnx"
        if not fp32.exists():
            export_onnx(reference.model, reference, fp32)
        if backend == "ort-fp32":
            return OrtClassifier(fp32, reference, threads)
        return OrtClassifier(quantize_onnx(fp32, work / f"{model_dir.name}-int8.onnx"), reference, threads)
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    # compile wraps lazily: the wrapper compiles the model as quantize_ leaves it, on first use
    predictor = Predictor(model_dir, device="cpu", max_length=max_length, chunk_size=batch,
                          performance={"compile": backend.endswith("-compiled")})
    quantize_(predictor.model, Int8DynamicActivationInt8WeightConfig(),
              filter_fn=encoder_linears(predictor.model))
    return predictor


def versions() -> dict[str, str | None]:
    """The installed version of each package a backend rests on (None: not installed)."""
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run with teacher/, student/ and labels/")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime CPU threads")
    parser.add_argument("--batch", type=int, default=32, help="texts per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the texts per backend")
    parser.add_argument("--texts", type=int, default=None,
                        help="a fixed random sample of this many validation texts (default: all)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                        help=f"{REFERENCE} is always run: it is the reference")
    parser.add_argument("--onnx-dir", type=Path, default=None,
                        help="keep the ONNX files here (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "int8_backends-cpu.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    texts, labels, groups, unit, margin, max_length = validation_evidence(args.run_dir)
    if args.texts is not None and args.texts < len(texts):  # a sample keeps the length mix
        keep = np.sort(np.random.default_rng(0).choice(len(texts), args.texts, replace=False))
        texts, labels = [texts[i] for i in keep], labels[keep]
        groups = None if groups is None else groups[keep]
    backends = [REFERENCE] + [b for b in args.backends if b != REFERENCE]
    clusters = "rows" if groups is None else f"{len(np.unique(groups))} {unit}s"
    found = versions()
    print(f"cpu {cpu_name()}, {args.threads} threads, batch {args.batch}; {len(texts)} validation "
          f"texts in {clusters}; margin {100 * margin:g} point(s); "
          + ", ".join(f"{k} {v}" for k, v in found.items() if v))

    rows, failures = [], []
    table = [("| model | backend | texts/s | × torch-fp32 | accuracy | agreement "
              "| − torch-fp32 (95% CI), points | verdict |"), "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.onnx_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for model in args.models:
            model_dir = args.run_dir / model
            reference = Predictor(model_dir, device="cpu", max_length=max_length, chunk_size=args.batch)
            runners: dict[str, Classifier] = {}
            for backend in backends:
                try:  # the first batch too: torch.compile and kernel lookups fail there, not at build
                    runners[backend] = build(backend, model_dir, reference, work, args.threads,
                                             max_length, args.batch)
                    runners[backend].logits(texts[:args.batch])
                except Exception as err:  # noqa: BLE001 - a backend that does not work here is a result too
                    runners.pop(backend, None)
                    error = f"{type(err).__name__}: {err}".strip()
                    failures.append({"model": model, "backend": backend, "error": error,
                                     "traceback": traceback.format_exc(limit=-4)})
                    print(f"{model} {backend}: failed: {error.splitlines()[0][:300]}", flush=True)
            logits, speeds = timed_passes(runners, texts, args.repeats)
            del runners
            speed = {b: statistics.median(s) for b, s in speeds.items()}
            for backend in speeds:
                row = {"model": model, "backend": backend, "texts_per_s": speed[backend],
                       "speedup": speed[backend] / speed[REFERENCE], "passes": speeds[backend]}
                if backend == REFERENCE:
                    row["accuracy"] = float(correctness(logits[backend], labels).mean())
                    shown = ("1.000", "", "")
                else:
                    vs = compare({"fp32": logits[REFERENCE], "int8": logits[backend]}, labels, groups, margin)
                    row |= {"accuracy": vs["int8_accuracy"], "agreement": vs["agreement"],
                            "diff": vs["diff"], "ci_low": vs["ci_low"], "ci_high": vs["ci_high"],
                            "verdict": vs["verdict"]}
                    interval = f"({100 * row['ci_low']:+.2f} to {100 * row['ci_high']:+.2f})"
                    shown = (f"{row['agreement']:.3f}", f"{100 * row['diff']:+.2f} {interval}", row["verdict"])
                rows.append(row)
                table.append(f"| {model} | {backend} | {speed[backend]:.0f} | {row['speedup']:.2f}× "
                             f"| {row['accuracy']:.4f} | {' | '.join(shown)} |")
                print(table[-1], flush=True)

    print("\n".join(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run_dir": str(args.run_dir.resolve()), "cpu": cpu_name(), "threads": args.threads,
        "versions": found, "batch": args.batch, "repeats": args.repeats, "texts": len(texts),
        "clusters": None if groups is None else len(np.unique(groups)), "unit": unit,
        "margin": margin, "rows": rows, "failures": failures,
    }, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
