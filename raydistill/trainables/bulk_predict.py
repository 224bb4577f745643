"""Bulk prediction on Ray Data: a table of texts in, the same table with each text's label and
probabilities out, for tables far larger than memory.

``map_batches`` runs a pool of actors, each holding one model (:class:`Predictor`, the same
code Serve's replicas run, so a text gets the label and score the HTTP API gives it); each batch
is cut into length-sorted chunks before the forward pass. The driver streams the results, in
input order, into one output file (CSV, JSONL or Parquet, by its suffix), so the memory of every
process stays flat however long the table is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from raydistill.platform.config import PRECISIONS
from raydistill.platform.data.files import file_format
from raydistill.platform.errors import ConfigError, DataError, ResourceError
from raydistill.platform.logs import log
from raydistill.platform.machine import release_freed_memory
from raydistill.platform.rundir import RunDir

LABEL, SCORE = "label", "score"  # the columns added to the input's
BATCH_ROWS = 256  # rows an actor receives at a time (then length-sorted chunks of CHUNK)
CHUNK = 32
READ_CPUS = 0.5  # what a read task reserves: parsing a block is light, and the actors must leave room for it
MIN_ACTOR_CPUS = 0.25


class _Model:
    """One actor of the pool: a model loaded once, answering a batch of rows at a time."""

    def __init__(self, model_dir: str, precision: str, text_column: str, threads: int, max_length: int | None) -> None:
        import torch

        from raydistill.serve.predictor import Predictor

        torch.set_num_threads(threads)
        self.predictor = Predictor(model_dir, device="cpu", precision=precision, chunk_size=CHUNK,
                                   max_length=max_length)
        self.text_column = text_column

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        texts = ["" if t is None else str(t) for t in batch[self.text_column].tolist()]
        answers = self.predictor.predict(texts)
        out = batch.copy()
        out[LABEL] = [a["label"] for a in answers]
        out[SCORE] = [a["score"] for a in answers]
        for name in self.predictor.labels:
            out[f"{SCORE}_{name}"] = [a["scores"][name] for a in answers]
        release_freed_memory()  # glibc keeps the freed heap otherwise: the actor's RSS climbs
        return out


def predict_file(run_dir: str | Path, source: str | Path, target: str | Path, *, model: str = "student",
                 precision: str = "fp32", text_column: str = "text", actors: int = 1,
                 threads_per_actor: int = 2, overwrite: bool = False) -> dict[str, Any]:
    """Label every row of ``source`` with ``model`` of the run and write ``target``; returns the
    counts and timings. Raises DataError for a missing file, an unknown format or a missing text
    column, ConfigError for an unknown model or precision or an existing ``target``."""
    import ray
    import ray.data

    run = RunDir.existing(run_dir)
    source, target = Path(source), Path(target)
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    model_dir = run.model(model) if model in ("student", "teacher") else None
    if model_dir is None or not model_dir.is_dir():
        raise ConfigError(f"{run.root} has no {model!r} model to predict with (student or teacher)")
    if not source.is_file():
        raise DataError(f"input file not found: {source}")
    kind, out_kind = file_format(source), file_format(target)
    if kind is None or out_kind is None:
        raise DataError(f"{source if kind is None else target}: use a .csv, .jsonl or .parquet file")
    if target.exists() and not overwrite:
        raise ConfigError(f"{target} exists; choose another --output or pass --force")
    from raydistill.platform.config import load_config

    cfg = load_config(run.config)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # output rows in input order
    context.enable_progress_bars = False  # our own progress line instead (Ray's logs a table every 10 s)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ds = _read(ray.data, source, kind)
    # Each actor reserves its threads' CPUs, but never so many that no read task fits beside the
    # pool (a read task waiting on the actors that wait on it deadlocks the pipeline).
    free = _free_cpus(ray, READ_CPUS + MIN_ACTOR_CPUS * actors)
    room = (free - READ_CPUS) / actors
    if room < MIN_ACTOR_CPUS:
        raise ResourceError(f"predict needs {READ_CPUS + MIN_ACTOR_CPUS * actors:g} free CPUs for {actors} model "
                            f"actor(s) and its reads; {free:g} are free (a Serve application or a sweep holds the "
                            "rest): stop it, or use fewer --actors")
    actor_cpus = min(float(threads_per_actor), room)
    columns = ds.columns() or []
    if text_column not in columns:
        raise DataError(f"{source} has no column {text_column!r} (it has {columns}); pass --text-column")
    labelled = ds.map_batches(
        _Model, batch_format="pandas", batch_size=BATCH_ROWS, compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=actor_cpus,
        fn_constructor_kwargs={"model_dir": str(model_dir), "precision": precision, "text_column": text_column,
                               "threads": threads_per_actor, "max_length": cfg.tokenizer.max_length})
    started = time.perf_counter()
    rows = _write(labelled.iter_batches(batch_format="pandas", batch_size=4 * BATCH_ROWS), target, out_kind)
    seconds = time.perf_counter() - started
    log.info(f"[predict] {rows:,} rows with the {model} ({precision}) in {seconds:.1f}s "
             f"({rows / max(seconds, 1e-9):,.0f} texts/s) -> {target}")
    return {"rows": rows, "seconds": seconds, "texts_per_s": rows / max(seconds, 1e-9), "model": model,
            "precision": precision, "actors": actors, "threads_per_actor": threads_per_actor}


def _free_cpus(ray: Any, needed: float, wait_s: float = 15.0) -> float:
    """The free CPUs, waiting up to ``wait_s`` for ``needed`` (a finished dataset's actors
    release theirs a moment after it ends; right after ``ray.init`` none are reported yet)."""
    deadline = time.monotonic() + wait_s
    while True:
        free = float(ray.available_resources().get("CPU", 0.0))
        if free >= needed or time.monotonic() > deadline:
            return free
        time.sleep(0.2)


def _read(data: Any, path: Path, kind: str) -> Any:
    if kind == "csv":  # a quoted text may hold line breaks: the chunker must not split inside it
        import pyarrow.csv

        return data.read_csv(str(path), num_cpus=READ_CPUS,
                             parse_options=pyarrow.csv.ParseOptions(newlines_in_values=True))
    if kind == "jsonl":
        return data.read_json(str(path), lines=True, num_cpus=READ_CPUS)
    # Ray 2.60's Parquet reader runs a file-listing task at a whole CPU whatever it is told, which
    # never starts beside a model actor on a small or busy node: the table is read here instead
    # (whole: CSV and JSONL stream, Parquet does not).
    import pyarrow.parquet

    return data.from_arrow(pyarrow.parquet.read_table(str(path)))


def _write(batches: Iterator[pd.DataFrame], target: Path, kind: str, every_s: float = 15.0) -> int:
    """Append each batch to ``target`` as it arrives (written beside it, renamed at the end),
    with a progress line every ``every_s`` seconds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    rows, writer = 0, None
    started = last = time.perf_counter()
    try:
        with tmp.open("w", encoding="utf-8", newline="") if kind != "parquet" else contextlib.nullcontext() as text:
            for batch in batches:
                if kind == "csv":
                    batch.to_csv(text, index=False, header=rows == 0)
                elif kind == "jsonl":
                    for record in batch.to_dict(orient="records"):
                        text.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                else:
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    table = pa.Table.from_pandas(batch, preserve_index=False)
                    writer = writer or pq.ParquetWriter(str(tmp), table.schema)
                    writer.write_table(table)
                rows += len(batch)
                if (now := time.perf_counter()) - last >= every_s:
                    last = now
                    log.info(f"[predict] {rows:,} rows ({rows / (now - started):,.0f} texts/s)")
        if writer is not None:
            writer.close()
        if rows == 0:
            raise DataError("the input has no rows")
        tmp.replace(target)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return rows
