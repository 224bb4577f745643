"""The end-to-end study: teacher (active learning) -> student sweep -> winner -> report ->
serve + bench. Each finished stage is recorded in ``stages.json``, so ``--resume RUN_DIR``
continues from the first unfinished one.
"""

from __future__ import annotations

import json
import os
import platform as std_platform
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from raydistill.platform import manifest
from raydistill.platform.config import STAGE_INPUTS, ExperimentConfig, dump_config, flat_config, load_config
from raydistill.platform.errors import CheckpointError, ClusterError, ConfigError
from raydistill.platform.logs import attach_run_log, log, result
from raydistill.platform.rundir import RunDir, atomic_write_json, atomic_write_text

GIT_SHA_ENV = "RAYDISTILL_GIT_SHA"
STAGES = ("teacher", "sweep", "winner", "report", "serve")
SMOKE_PRESET = "tiny-12l"  # the 12 -> 6 machinery, minutes

# Ray reads these when it starts; set before ``ray.init`` so local workers inherit them.
_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_DEDUP_LOGS": "1",
    # Tune's console box and its TensorBoard hint (into Ray's temporary session directory): the
    # sweep logs its own progress lines and points at RUN (teacher and trial events) instead.
    "RAY_AIR_NEW_OUTPUT": "0",
    # Ray's driver prints the raylet's messages (one when Serve shuts its controller down) with
    # ANSI colour codes, raw in a log file or a pipe; plain text instead.
    "RAY_COLOR_PREFIX": "0",
}


DASHBOARD_PORT = 8265


@contextmanager
def ray_session(verbose: bool = False, dashboard: bool = False) -> Iterator[None]:
    """Attach to ``RAY_ADDRESS`` when set (``ray job submit``), else start a private local Ray,
    with Ray's dashboard on 127.0.0.1:8265 when ``dashboard`` (off by default: it costs a
    process and memory a laptop run does not need).

    Never attaches to a stray head by accident (``address="local"``); shuts down what it started.
    """
    import ray

    for key, value in _RAY_ENV.items():
        os.environ.setdefault(key, value)
    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or "local"
        kwargs: dict[str, Any] = {"address": address, "log_to_driver": verbose}
        if address == "local":
            kwargs["include_dashboard"] = dashboard
            if dashboard:
                kwargs.update(dashboard_host="127.0.0.1", dashboard_port=DASHBOARD_PORT)
        if not verbose:
            kwargs["logging_level"] = "ERROR"
        _check_reachable(address)
        try:
            with _loopback_node(address == "local"):
                ray.init(**kwargs)
        except (ConnectionError, TimeoutError) as err:
            raise ClusterError(_attach_hint(address, err)) from None
        started = True
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@contextmanager
def _loopback_node(private: bool) -> Iterator[None]:
    """A private Ray's node address is 127.0.0.1, so the servers Ray places by it (the metrics
    export, the dashboard agent) listen on loopback only. ``ray.init`` turns 127.0.0.1 into the
    machine's address unless Ray's own single-machine switch (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``,
    read once at import) is off: flip it for the private node only, never when attaching."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = before and not private
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at a ``host:port`` address (Ray's
    own client retries a dead GCS address for minutes). Other forms (``local``, ``auto``,
    ``ray://``) are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ClusterError(_attach_hint(address, err)) from None


def _attach_hint(address: str, err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (f"could not attach to the Ray cluster at {address} ({first[:200]}). Check that its head "
            "is up and the address is right; a head started by Ray 2.60 enables token auth by "
            "default, so clients need RAY_AUTH_MODE=token (and the token) in their environment.")


def preflight_study(cfg: ExperimentConfig) -> None:
    """Every stage's resource check (and the tracking package, when tracking is on), before a
    new run directory is made: a refusal leaves nothing behind. Raises ResourceError naming the
    settings, ConfigError naming the missing package."""
    from raydistill.platform.tracking import mlflow_target
    from raydistill.trainables.student import preflight_sweep
    from raydistill.trainables.teacher import preflight_teacher

    mlflow_target(cfg, Path(cfg.runs_dir))
    preflight_teacher(cfg)
    preflight_sweep(cfg)


def _git_sha() -> str | None:
    """The code's commit: ``RAYDISTILL_GIT_SHA`` when set (``ray job submit`` uploads the working
    directory without ``.git``; the README's job command passes it), else what git says."""
    if sha := os.environ.get(GIT_SHA_ENV, "").strip():
        return sha
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_meta(run: RunDir, data) -> None:
    """Versions, git SHA, data and tokenizer hashes: what a reader needs to trust the numbers."""
    import hashlib

    import ray
    import torch
    import transformers

    vocab = json.dumps(data.tokenizer.get_vocab(), sort_keys=True).encode()
    atomic_write_json(run.meta, {
        "raydistill": __import__("raydistill").__version__, "ray": ray.__version__,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": std_platform.python_version(), "machine": std_platform.platform(),
        "git_sha": _git_sha(), "data_sha256": data.dataset.fingerprint(),
        "tokenizer_sha256": hashlib.sha256(vocab).hexdigest(),
        "train_size": len(data.dataset.train), "validation_size": len(data.dataset.validation),
        "test_size": len(data.dataset.test),
    })


def _stages_done(run: RunDir) -> dict[str, Any]:
    """The finished stages recorded in ``stages.json``. Raises CheckpointError for a corrupt one."""
    if not run.stages.is_file():
        return {}
    try:
        done = json.loads(run.stages.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{run.stages} is corrupt ({err}); fix or delete it to re-run every stage") from None
    if not isinstance(done, dict):
        raise CheckpointError(f"{run.stages} is corrupt: expected a JSON object of stages")
    return done


def _mark_done(run: RunDir, stage: str, info: dict[str, Any], cfg: ExperimentConfig,
               data_sha256: str | None = None) -> None:
    """Record ``stage`` as finished, and in ``manifest.json`` what it was built from (config
    values, data hash, code version) and, for the teacher and the winner, the hashes of the
    files they hand on: every later command checks both."""
    inputs = _stage_inputs(cfg, stage)
    if data_sha256:
        inputs["data_sha256"] = data_sha256
    manifest.record(run, stage, inputs, code=f"raydistill {__import__('raydistill').__version__} ({_git_sha() or 'no git'})")
    done = _stages_done(run)
    done[stage] = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
    atomic_write_json(run.stages, done)


def new_run(cfg: ExperimentConfig) -> RunDir:
    """A new run directory with its config; from here on the log also goes to RUN/run.log."""
    run = RunDir.create(cfg.runs_dir, cfg.name)
    atomic_write_text(run.config, dump_config(cfg))
    attach_run_log(run.root)
    return run


# A finished (or, for the sweep, started) stage pins the config sections it is built from
# (STAGE_INPUTS). Fields that only place or size the work (resources, retries, retention)
# change how it runs, not what it computes, and stay free.
_PLACEMENT_ONLY = ("cpus_per_", "gpus_per_", "threads_per_worker", "max_concurrent_trials", "scorers",
                   "checkpoints_to_keep", "max_failures")


def open_run(path: str | Path, overrides: list[str] | None = None) -> tuple[RunDir, ExperimentConfig]:
    """An existing run directory and its resolved config (plus overrides, saved back).

    Raises ConfigError when an override changes what an already built stage was computed from
    (``--resume --set teacher.lr=...`` after the teacher finished): the run would mix results of
    two configs. Serving, bench and resource fields may change. Raises CheckpointError when a
    file a finished stage handed on is missing or changed (``manifest.json``)."""
    run = RunDir.existing(path)
    done = _stages_done(run)
    manifest.verify(run, done)
    cfg = load_config(run.config, overrides)
    if overrides:
        _refuse_changed_inputs(run, done, load_config(run.config), cfg)
    _refuse_edited_inputs(run, done, cfg)
    if overrides:
        atomic_write_text(run.config, dump_config(cfg))
    attach_run_log(run.root)
    return run, cfg


def _refuse_changed_inputs(run: RunDir, done: dict[str, Any], recorded: ExperimentConfig,
                           wanted: ExperimentConfig) -> None:
    old, new = flat_config(recorded), flat_config(wanted)
    built = {"teacher": "teacher" in done, "sweep": "sweep" in done or run.tune_experiment.exists()}
    stale = []
    for key in sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)):
        if key.rsplit(".", 1)[-1].startswith(_PLACEMENT_ONLY):
            continue
        stage = next((st for st, sections in STAGE_INPUTS.items() if key.split(".")[0] in sections), None)
        if stage and built[stage]:
            stale.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r} (the {stage} stage was built with the old value)")
    if stale:
        raise ConfigError(
            f"{run.root}: --set would change inputs of stages this run already built:\n  "
            + "\n  ".join(stale)
            + f"\nStart a new run with them instead: raydistill run {run.config} --set ...")


def _stage_inputs(cfg: ExperimentConfig, stage: str) -> dict[str, Any]:
    """The config values ``stage`` is computed from (flat keys), placement-only fields left out."""
    sections = STAGE_INPUTS.get(stage, ())
    return {key: value for key, value in flat_config(cfg).items()
            if key.split(".")[0] in sections and not key.rsplit(".", 1)[-1].startswith(_PLACEMENT_ONLY)}


def _refuse_edited_inputs(run: RunDir, done: dict[str, Any], cfg: ExperimentConfig) -> None:
    """Refuse a run whose config.yaml or data file changed, by hand, since a finished stage
    recorded them in the manifest (``--set`` is refused earlier with the same lines)."""
    current = flat_config(cfg)
    if any("data_sha256" in inputs for inputs in manifest.stage_inputs(run, done).values()):
        from raydistill.platform.data import load_dataset

        current["data_sha256"] = load_dataset(cfg.data).fingerprint()
    if changed := manifest.changed_inputs(run, done, current):
        raise CheckpointError(
            f"{run.root}: its config.yaml or data changed since these stages were built:\n  "
            + "\n  ".join(changed)
            + "\nRestore them, or start a new run: results built on both would not be one run's.")


def _banner(title: str) -> None:
    log.info(f"\n=== {title} ===")


def run_teacher(cfg: ExperimentConfig, run: RunDir, data,
                round_hook: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    from raydistill.platform.report import plot_active_learning
    from raydistill.trainables.teacher import run_teacher_stage

    rounds = f"{cfg.al.rounds} active-learning round{'s' if cfg.al.rounds != 1 else ''}"
    arms = f"{cfg.al.acquisition} and random" if cfg.al.compare_random and cfg.al.acquisition != "random" else cfg.al.acquisition
    _banner(f"teacher: {cfg.teacher.num_layers} layers, {rounds} ({arms})")
    result = run_teacher_stage(cfg, run, data, round_hook=round_hook)
    plot_active_learning(run.al_curve, run.al / "curve.png")
    main = result["runs"][0]
    info = {"labeled": main.labeled, "validation_accuracy": result["validation_accuracy"],
            "test_accuracy": result["test_accuracy"]}
    _mark_done(run, "teacher", info, cfg, data.dataset.fingerprint())
    log.info(f"[teacher] teacher: {run.teacher}\n[teacher] learning curve: {run.al_curve}")
    return info


def _check_teacher(run: RunDir, force: bool) -> None:
    """Stop before the sweep when the teacher does not beat the majority class (``force``: warn)."""
    from raydistill.platform.report.assemble import teacher_check
    from raydistill.platform.report.baseline import TeacherError

    check = teacher_check(run)
    if check is None or check.beats_majority:
        return
    if not force:
        raise TeacherError(f"{check.sentence()}; nothing distilled from it could be trusted. Fix the data "
                           "or the recipe, or run again with --force to go on regardless")
    log.warning(f"warning: {check.sentence()} (--force: going on; the report will say so first)")


def run_study(cfg: ExperimentConfig, run: RunDir, serve: bool = True, keep_serving: bool = False,
              round_hook: Callable[[int, int], None] | None = None, force: bool = False) -> dict[str, Any]:
    """Run every unfinished stage of the study in ``run``; returns a summary for printing.
    Raises TeacherError after the teacher stage when the teacher does not beat the majority
    class, unless ``force`` (then the report and the summary say so first)."""
    from raydistill.platform.guards import check_sizes
    from raydistill.platform.prepared import prepare_data
    from raydistill.platform.report import (
        al_comparison,
        analyse,
        format_table,
        strategy_sentence,
        verdict_sentence,
        write_report,
    )
    from raydistill.trainables.student import export_winner, run_sweep

    attach_run_log(run.root)
    started = time.monotonic()
    done = _stages_done(run)
    data = prepare_data(cfg, run)
    for warning in check_sizes(cfg, len(data.encoded["train"]), len(data.encoded["validation"])):
        log.warning(f"warning: {warning}")
    if not run.meta.is_file():
        write_meta(run, data)
    teacher = done.get("teacher") or run_teacher(cfg, run, data, round_hook)
    _check_teacher(run, force)
    if "sweep" not in done:
        _banner(f"sweep: {len(cfg.sweep.strategies)} strategies x {len(cfg.sweep.temperatures)} "
                f"temperatures x {len(cfg.sweep.seeds)} seeds")
        run_sweep(cfg, run, data, teacher["labeled"], resume=run.tune_experiment.exists())
        _mark_done(run, "sweep", {}, cfg)
    winner = done.get("winner") or export_winner(cfg, run, data)
    if "winner" not in done:
        _mark_done(run, "winner", winner, cfg)
    _banner("report")
    report_path = write_report(run.root)
    _mark_done(run, "report", {"path": report_path.relative_to(run.root).as_posix()}, cfg)
    run.point_latest(cfg.name)
    study = analyse(run.root)
    verdict = verdict_sentence(study.cells)
    result(format_table(study.cells, study.teacher))
    result(verdict)
    strategies = strategy_sentence(study.layer.strategies) if study.layer is not None else None
    if strategies:
        result(strategies)
    al = al_comparison(run.root)
    summary = {"run_dir": str(run.root), "report": str(report_path), "winner": winner,
               "verdict": verdict, "strategies": strategies, "active_learning": list(al["sentence"]) if len(al) else [],
               "teacher_validation_accuracy": teacher["validation_accuracy"],
               "teacher_test_accuracy": teacher["test_accuracy"]}
    if serve:
        summary["bench"] = serve_and_bench(cfg, run, keep_serving)
        _mark_done(run, "serve", {}, cfg)
    summary["wall_s"] = round(time.monotonic() - started, 1)
    return summary


def serve_and_bench(cfg: ExperimentConfig, run: RunDir, keep_serving: bool) -> dict[str, Any]:
    """Deploy student + teacher, run the short benchmark, shut down unless asked to keep them."""
    from raydistill.serve.app import deploy, shutdown
    from raydistill.serve.bench import run_bench

    _banner("serve + bench")
    url = deploy(run.root, host=cfg.serve.host, port=cfg.serve.port)
    log.info(f"[serve] student and teacher at {url} (page: {url}/, API: {url}/v1/classify)")
    try:
        bench = run_bench(run.root, cfg.bench, base_url=url)
    finally:
        if not keep_serving:
            shutdown()
    return bench
