"""``raydistill predict`` on Ray Data against plain in-process inference, on the same cores.

Builds tables of ``--rows`` sentences from the run's own data (its sentences repeated), labels
them with ``predict_file`` (Ray Data ``map_batches``, one model actor) and, before and after
each table, with the same model in this process (``Predictor.predict`` on the same batches, the
same threads; the share is of the mean of the two, as this machine drifts over minutes). Reports
texts/s of both and their ratio, and the peak resident memory of every process (the driver,
Ray's workers: the model actor and the read tasks), sampled from ``/proc`` while it runs, so
"memory flat over input size" is a measurement, with the model actor's memory over its life.

    python benchmarks/bulk_predict.py RUN_DIR --rows 20000 200000 --precision int8

Writes JSON (``--out``, default ``benchmarks/results/bulk_predict-cpu.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from raydistill.platform.config import load_config
from raydistill.platform.data import load_dataset
from raydistill.platform.machine import cpu_name
from raydistill.platform.rundir import RunDir


class MemorySampler:
    """Peak VmRSS (MiB) per process whose command line mentions Ray or Python, every 0.2 s, and
    each process's RSS over time (flat memory is a line that stops rising, not two peaks)."""

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[str, float]] = {}
        self.traces: dict[int, list[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                if "ray" not in cmd and "python" not in cmd:
                    continue
                rss = next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS")), 0.0)
                name = cmd.split()[0] if cmd else "?"
                self.traces.setdefault(int(pid), []).append(rss)
                if rss > self.peaks.get(int(pid), ("", 0.0))[1]:
                    self.peaks[int(pid)] = (name[:60], rss)

    def largest_over_time(self, points: int = 5) -> list[float]:
        """RSS of the process with the highest peak (the model actor) at ``points`` evenly
        spaced moments of its life, the last one its end."""
        pid = max(self.peaks, key=lambda p: self.peaks[p][1])
        trace = self.traces[pid]
        return [round(trace[min(len(trace) - 1, (len(trace) * (i + 1)) // points - 1)]) for i in range(points)]

    def by_kind(self) -> dict[str, float]:
        """The largest peak of each kind of process (the driver is this one)."""
        kinds: dict[str, float] = {}
        for pid, (name, rss) in self.peaks.items():
            kind = "driver" if pid == os.getpid() else name
            kinds[kind] = max(kinds.get(kind, 0.0), rss)
        return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


def in_process(run: RunDir, texts: list[str], precision: str, threads: int) -> float:
    """texts/s of the model in this process, on predict_file's batches and chunks."""
    import torch

    from raydistill.serve.predictor import Predictor
    from raydistill.trainables.bulk_predict import BATCH_ROWS, CHUNK

    torch.set_num_threads(threads)
    predictor = Predictor(run.student, device="cpu", precision=precision, chunk_size=CHUNK)
    predictor.predict(texts[:BATCH_ROWS])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(texts), BATCH_ROWS):
        predictor.predict(texts[i:i + BATCH_ROWS])
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--rows", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline-rows", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bulk_predict-cpu.json"))
    args = parser.parse_args()
    import ray

    from raydistill.trainables.bulk_predict import predict_file

    run = RunDir.existing(args.run_dir)
    data = load_dataset(load_config(run.config).data)
    sentences = [t for split in ("train", "validation", "test") for t in data.split(split).texts]
    tmp = Path(tempfile.mkdtemp(prefix="bulk-predict-"))
    baseline_texts = [sentences[i % len(sentences)] for i in range(args.baseline_rows)]
    baselines = [in_process(run, baseline_texts, args.precision, args.threads)]
    print(f"in process: {baselines[0]:.1f} texts/s ({args.baseline_rows:,} rows, {args.precision})", flush=True)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    rows = []
    try:
        for n in args.rows:
            source = tmp / f"table-{n}.csv"
            pd.DataFrame({"id": range(n), "text": [sentences[i % len(sentences)] for i in range(n)]}).to_csv(
                source, index=False)
            with MemorySampler() as memory:
                out = predict_file(run.root, source, tmp / f"labelled-{n}.parquet", precision=args.precision,
                                   threads_per_actor=args.threads)
            # in process again after each table: this VM drifts by 10% and more over minutes, so
            # each share is of the mean of the in-process figures on either side of it
            baselines.append(in_process(run, baseline_texts, args.precision, args.threads))
            print(f"in process: {baselines[-1]:.1f} texts/s", flush=True)
            baseline = (baselines[-2] + baselines[-1]) / 2
            row = {"rows": n, "seconds": round(out["seconds"], 1), "texts_per_s": round(out["texts_per_s"], 1),
                   "in_process_texts_per_s": round(baseline, 1),
                   "share_of_in_process": round(out["texts_per_s"] / baseline, 3),
                   "peak_rss_mib": {k: round(v) for k, v in list(memory.by_kind().items())[:6]},
                   "largest_process_rss_mib_over_time": memory.largest_over_time()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        ray.shutdown()
    result = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
              "cores": os.cpu_count(), "precision": args.precision, "threads": args.threads,
              "in_process_texts_per_s": [round(b, 1) for b in baselines], "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print("| rows | seconds | texts/s | share of in process | peak RSS (MiB), by process | largest process's RSS over its life |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        peaks = ", ".join(f"{k} {v}" for k, v in r["peak_rss_mib"].items())
        trace = " → ".join(map(str, r["largest_process_rss_mib_over_time"]))
        print(f"| {r['rows']:,} | {r['seconds']} | {r['texts_per_s']} | {100 * r['share_of_in_process']:.0f}% | {peaks} "
              f"| {trace} |")


if __name__ == "__main__":
    main()
