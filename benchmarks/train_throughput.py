"""Teacher training throughput and MFU: a plain torch loop vs the same loop through Ray Train.

The same training step (AdamW, random token ids of exactly ``--seq`` tokens, batch ``--batch``)
runs first as a plain loop in this process, then inside a Ray Train ``TorchTrainer`` (DDP over
``--workers`` workers sharing the same cores or GPU), measured in one run. Reports sequences/s,
MFU and Ray Train's overhead (1 - ray/plain). FLOPs per sequence: forward L*s*(24h^2 + 4sh),
x3 for a training step. The peak is ``--peak-tflops`` when given (the spec sheet: H100/H200
bf16 dense 989), else this device's measured matmul rate in the chosen dtype (say which).

    python benchmarks/train_throughput.py RUN_DIR                  # the run's teacher, CPU
    python benchmarks/train_throughput.py --shape bert-base --dtype bf16 --batch 32 --seq 128 \\
        --peak-tflops 989 --plain-only                             # a GPU machine without Ray
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from raydistill.platform.machine import cpu_name

from model_throughput import SHAPES  # a dict: Ray pickles it by value with the loop below


def build_teacher(source: dict[str, Any]) -> torch.nn.Module:
    """The run's teacher (``{"run_dir": ...}``) or a random one of a shape (``{"shape": ...}``),
    built as the platform builds a from-scratch teacher; imports inside, so a Ray worker builds
    it from this plain dict (it cannot import this folder's modules)."""
    from raydistill.platform.config import TeacherConfig
    from raydistill.platform.models import build_teacher as platform_teacher, load_classifier

    if source.get("run_dir"):
        return load_classifier(Path(source["run_dir"]) / "teacher")
    layers, _, hidden, heads, intermediate = SHAPES[source["shape"]]
    cfg = TeacherConfig(num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=intermediate)
    return platform_teacher(cfg, num_labels=2, vocab_size=30522, max_length=512)


def train_flops_per_sequence(layers: int, hidden: int, seq: int) -> float:
    return 3 * layers * seq * (24 * hidden**2 + 4 * seq * hidden)


def matmul_tflops(device: torch.device, dtype: str, n: int = 2048, seconds: float = 2.0) -> float:
    """Measured dense matmul rate: the roofline this device reaches in practice."""
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=torch_dtype)
    b = torch.randn(n, n, device=device, dtype=torch_dtype)
    a @ b
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        calls += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
    return 2 * n**3 * calls / (time.perf_counter() - started) / 1e12


def train_loop(config: dict[str, Any]) -> dict[str, float]:
    """``steps`` timed training steps after ``warmup`` ones; returns sequences/s. Runs as is in
    this process, and as the ``train_loop_per_worker`` of a TorchTrainer (then DDP-wrapped and
    reporting through Ray Train, as the teacher stage does)."""
    in_ray = config.get("in_ray", False)
    if in_ray:
        import ray.train
        import ray.train.torch

        torch.set_num_threads(config["threads"])
    model = build_teacher(config["source"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).train()
    if in_ray:
        model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    vocab, batch, seq = config["vocab"], config["batch"], config["seq"]
    ids = torch.randint(1, vocab, (batch, seq), device=device)
    labels = torch.randint(0, 2, (batch,), device=device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if config["dtype"] == "bf16"
                else contextlib.nullcontext())

    def step() -> None:
        with autocast:
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(config["warmup"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(config["steps"]):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    result = {"sequences_per_s": config["steps"] * batch / (time.perf_counter() - started)}
    if in_ray:  # each rank's rate to a file: Train V2 keeps no metrics without a checkpoint
        rank = ray.train.get_context().get_world_rank()
        (Path(config["result_dir"]) / f"rank{rank}.json").write_text(json.dumps(result))
    return result


def through_ray_train(config: dict[str, Any], workers: int, cpus: int) -> float:
    """Sequences/s summed over ``workers`` DDP workers splitting ``cpus`` cores."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    per_worker = max(1, cpus // workers)
    result_dir = Path(tempfile.mkdtemp(prefix="train-throughput-"))
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    try:
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={**config, "in_ray": True, "threads": per_worker, "result_dir": str(result_dir)},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=torch.cuda.is_available(),
                                         resources_per_worker={"CPU": per_worker}),
            run_config=RunConfig(name=f"train-throughput-{time.time_ns()}",
                                 storage_path=str(Path("/tmp") / "raydistill-bench")),
        )
        trainer.fit()
        # DDP: each worker trains its own batch, so the group's rate is the sum
        return sum(json.loads(f.read_text())["sequences_per_s"] for f in result_dir.glob("rank*.json"))
    finally:
        ray.shutdown()
        shutil.rmtree(result_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", help="a run with teacher/ (else --shape)")
    parser.add_argument("--shape", choices=sorted(SHAPES))
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP)")
    parser.add_argument("--cpus", type=int, default=None, help="cores for both loops (default: all)")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--plain-only", action="store_true", help="skip Ray Train (no Ray here)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if (args.run_dir is None) == (args.shape is None):
        parser.error("give a RUN_DIR or --shape, not both")

    cpus = args.cpus or len(os.sched_getaffinity(0))
    torch.set_num_threads(cpus)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # absolute: Ray Train's workers run in their own working directory
    source = {"run_dir": args.run_dir and str(Path(args.run_dir).resolve()), "shape": args.shape}
    teacher = build_teacher(source)
    layers, hidden = teacher.config.num_hidden_layers, teacher.config.hidden_size
    config = {"source": source, "vocab": min(teacher.config.vocab_size, 30000), "batch": args.batch,
              "seq": args.seq, "dtype": args.dtype, "steps": args.steps, "warmup": args.warmup}
    del teacher
    peak = args.peak_tflops or matmul_tflops(device, args.dtype)
    peak_source = "given" if args.peak_tflops else f"measured {args.dtype} matmul"
    flops = train_flops_per_sequence(layers, hidden, args.seq)
    plain = train_loop(config)["sequences_per_s"]
    rows = {"plain": plain}
    if not args.plain_only:
        rows["ray_train"] = through_ray_train(config, args.workers, cpus)

    print(f"teacher {layers} layers, hidden {hidden}, seq {args.seq}, batch {args.batch}, {args.dtype}, "
          f"{device.type} ({cpus} cores); peak {peak:.3f} TFLOP/s ({peak_source})")
    print("| loop | sequences/s | TFLOP/s | MFU |\n|---|---|---|---|")
    for name, rate in rows.items():
        print(f"| {name} | {rate:.1f} | {rate * flops / 1e12:.4f} | {100 * rate * flops / 1e12 / peak:.1f}% |")
    if "ray_train" in rows:
        print(f"Ray Train overhead: {100 * (1 - rows['ray_train'] / plain):.1f}% "
              f"({args.workers} worker(s) x {max(1, cpus // args.workers)} thread(s) vs one loop on {cpus})")
    out = args.out or Path(__file__).parent / "results" / f"train_throughput-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": args.run_dir or f"random {args.shape}",
        "layers": layers, "hidden": hidden, "seq": args.seq, "batch": args.batch, "dtype": args.dtype,
        "device": device.type, "cpu": cpu_name(), "cpus": cpus, "workers": args.workers,
        "peak_tflops": peak, "peak_source": peak_source, "flops_per_sequence": flops,
        "sequences_per_s": rows, "mfu": {k: v * flops / 1e12 / peak for k, v in rows.items()},
        "torch": torch.__version__,
    }, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
