"""Teacher vs student inference throughput, model only (no tokenizer, no Ray, no HTTP).

Texts/s of each model's forward pass on random token ids of exactly ``seq`` tokens, for every
sequence length x batch size x dtype, measured in one process with the models taking turns
call by call (a shared machine's drift hits both alike). Reports the ratios that matter:
student/teacher per cell, and bf16/fp32 per model where bf16 runs. Imports only
``raydistill.platform``, so it runs on a GPU machine that has torch and transformers but not Ray.

    python benchmarks/model_throughput.py RUN_DIR                  # a run's exported teacher/student
    python benchmarks/model_throughput.py --shape bert-base        # random 12- vs 6-layer bert-base
    python benchmarks/model_throughput.py RUN_DIR --seq 64 128 256 --batch 1 32 256 --dtype fp32 bf16

Writes the figures as JSON (``--out``, default ``benchmarks/results/model_throughput-<device>.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from raydistill.platform.machine import cpu_name

SHAPES = {  # (teacher layers, student layers, hidden, heads, intermediate): random weights
    "bert-base": (12, 6, 768, 12, 3072),
    "minilm": (6, 3, 384, 12, 1536),
}


def models_from_run(run_dir: Path) -> dict[str, torch.nn.Module]:
    from raydistill.platform.models import load_classifier

    return {name: load_classifier(run_dir / name) for name in ("teacher", "student")}


def random_bert(shape: str, layers: int) -> torch.nn.Module:
    """A randomly initialised BERT classifier of ``shape``'s width with ``layers`` layers,
    built as the platform builds a from-scratch teacher."""
    from raydistill.platform.config import TeacherConfig
    from raydistill.platform.models import build_teacher

    _, _, hidden, heads, intermediate = SHAPES[shape]
    cfg = TeacherConfig(num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=intermediate)
    return build_teacher(cfg, num_labels=2, vocab_size=30522, max_length=512)


def models_from_shape(shape: str) -> dict[str, torch.nn.Module]:
    teacher_layers, student_layers = SHAPES[shape][:2]
    return {"teacher": random_bert(shape, teacher_layers), "student": random_bert(shape, student_layers)}


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_cell(models: dict[str, torch.nn.Module], device: torch.device, seq: int, batch: int,
              dtype: str, min_seconds: float, min_calls: int) -> dict[str, float]:
    """Median seconds per forward call of each model at one (seq, batch, dtype)."""
    vocab = min(m.config.vocab_size for m in models.values())
    ids = torch.randint(1000 if vocab > 2000 else 1, vocab, (batch, seq), device=device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode(), _autocast(device, dtype):
        for model in models.values():  # warm-up: kernels chosen, caches filled
            model(**inputs)
        started = time.perf_counter()
        while True:
            for name, model in models.items():
                _sync(device)
                t0 = time.perf_counter()
                model(**inputs)
                _sync(device)
                times[name].append(time.perf_counter() - t0)
            if len(times["teacher"]) >= min_calls and time.perf_counter() - started >= min_seconds:
                break
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", help="a run with teacher/ and student/ (else --shape)")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this shape")
    parser.add_argument("--seq", type=int, nargs="+", default=None, help="default: 64 128 (CPU), 64 128 256 (GPU)")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="default: 1 32 (CPU), 1 32 256 (GPU)")
    parser.add_argument("--dtype", nargs="+", choices=["fp32", "bf16"], default=None,
                        help="default: fp32 on CPU (bf16 is emulated without AVX-512 BF16), both on CUDA")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="per cell, both models together")
    parser.add_argument("--min-calls", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if (args.run_dir is None) == (args.shape is None):
        parser.error("give a RUN_DIR or --shape, not both")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    seqs = args.seq or ([64, 128, 256] if gpu else [64, 128])
    batches = args.batch or ([1, 32, 256] if gpu else [1, 32])
    dtypes = args.dtype or (["fp32", "bf16"] if gpu else ["fp32"])
    models = models_from_run(Path(args.run_dir)) if args.run_dir else models_from_shape(args.shape)
    models = {name: m.to(device).eval() for name, m in models.items()}
    layers = {name: m.config.num_hidden_layers for name, m in models.items()}

    rows = []
    print(f"device {torch.cuda.get_device_name(0) if gpu else cpu_name()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; layers {layers}")
    print("| seq | batch | dtype | teacher texts/s | student texts/s | student/teacher |")
    print("|---|---|---|---|---|---|")
    for seq, batch, dtype in itertools.product(seqs, batches, dtypes):
        seconds = time_cell(models, device, seq, batch, dtype, args.min_seconds, args.min_calls)
        row = {"seq": seq, "batch": batch, "dtype": dtype,
               **{f"{name}_texts_per_s": batch / s for name, s in seconds.items()}}
        row["student_vs_teacher"] = row["student_texts_per_s"] / row["teacher_texts_per_s"]
        rows.append(row)
        print(f"| {seq} | {batch} | {dtype} | {row['teacher_texts_per_s']:.1f} | "
              f"{row['student_texts_per_s']:.1f} | {row['student_vs_teacher']:.2f} |", flush=True)
    if "bf16" in dtypes and "fp32" in dtypes:
        by_cell = {(r["seq"], r["batch"], r["dtype"]): r for r in rows}
        print("\n| seq | batch | teacher bf16/fp32 | student bf16/fp32 |\n|---|---|---|---|")
        for seq, batch in itertools.product(seqs, batches):
            fp32, bf16 = by_cell[(seq, batch, "fp32")], by_cell[(seq, batch, "bf16")]
            ratios = [bf16[f"{n}_texts_per_s"] / fp32[f"{n}_texts_per_s"] for n in ("teacher", "student")]
            print(f"| {seq} | {batch} | {ratios[0]:.2f} | {ratios[1]:.2f} |")

    out = args.out or Path(__file__).parent / "results" / f"model_throughput-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": args.run_dir or f"random {args.shape}", "layers": layers, "device": device.type,
        "gpu": torch.cuda.get_device_name(0) if gpu else None, "cpu": cpu_name(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
