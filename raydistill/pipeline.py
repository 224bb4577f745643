"""The end-to-end study as a registry of stages: teacher (active learning) -> sweep -> winner ->
report -> serve + bench.

Each stage is declared once (:data:`STAGES`: what it is built from, what it reads, what it
hands on, its function); ``raydistill run`` walks them all and the per-stage commands walk
their part of the same registry. A finished stage is recorded in the run's one ledger,
``manifest.json`` (:mod:`raydistill.platform.manifest`), so ``--resume RUN_DIR`` continues from
the first unfinished one.
"""

from __future__ import annotations

import json
import os
import platform as std_platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from raydistill.platform import manifest
from raydistill.platform.config import STAGE_INPUTS, ExperimentConfig, dump_config, flat_config, load_config
from raydistill.platform.errors import CheckpointError, ConfigError, TeacherError
from raydistill.platform.export import Provenance, read_provenance
from raydistill.platform.logs import attach_run_log, log, result
from raydistill.platform.rundir import RunDir, atomic_write_json, atomic_write_text

GIT_SHA_ENV = "RAYDISTILL_GIT_SHA"
SMOKE_PRESET = "tiny-12l"  # the 12 -> 6 machinery, minutes


def preflight_study(cfg: ExperimentConfig) -> None:
    """Every stage's resource check (and the tracking package, when tracking is on), before a
    new run directory is made: a refusal leaves nothing behind. Raises ResourceError naming the
    settings, ConfigError naming the missing package."""
    from raydistill.platform.tracking import mlflow_target
    from raydistill.trainables.sweep import preflight_sweep
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
    done = manifest.finished(run)
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
            stale.append(manifest.stale(key, old.get(key), new.get(key), stage))
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


@dataclass
class StudyRun:
    """What the stages of one run share: its config and directory, the data (prepared once, on
    first use) and how the command asked them to behave."""

    cfg: ExperimentConfig
    run: RunDir
    force: bool = False  # go on past a teacher that does not beat the majority class
    keep_serving: bool = False
    resume_sweep: bool | None = None  # None: resume a sweep that has started, else start one
    _data: Any = field(default=None, repr=False)

    @property
    def data(self):
        if self._data is None:
            from raydistill.platform.guards import check_sizes
            from raydistill.platform.prepared import prepare_data

            self._data = prepare_data(self.cfg, self.run)
            for warning in check_sizes(self.cfg, len(self._data.encoded["train"]),
                                       len(self._data.encoded["validation"])):
                log.warning(f"warning: {warning}")
            if not self.run.meta.is_file():
                write_meta(self.run, self._data)
        return self._data

    def card(self, model: str) -> Provenance:
        card = read_provenance(self.run.model(model))
        if card is None:
            raise CheckpointError(f"{self.run.model(model)} has no readable card: run its stage again")
        return card


@dataclass(frozen=True)
class Stage:
    """One stage of the study. ``inputs``: the config sections it is computed from (a finished
    stage pins them, :data:`~raydistill.platform.config.STAGE_INPUTS`); ``needs``: the stages
    whose output it reads; ``hands_on``: what it leaves in the run directory for later ones."""

    name: str
    needs: tuple[str, ...]
    hands_on: str
    banner: Callable[[ExperimentConfig], str] | None
    run: Callable[[StudyRun], dict[str, Any]]

    @property
    def inputs(self) -> tuple[str, ...]:
        return STAGE_INPUTS.get(self.name, ())


def _teacher(study: StudyRun) -> dict[str, Any]:
    from raydistill.platform.report import plot_active_learning
    from raydistill.trainables.teacher import run_teacher_stage

    data = study.data
    outcome = run_teacher_stage(study.cfg, study.run, data)
    plot_active_learning(study.run.al_curve, study.run.al_plot)
    log.info(f"[teacher] teacher: {study.run.teacher}\n[teacher] learning curve: {study.run.al_curve}")
    return {"labeled": outcome["runs"][0].labeled}


def _teacher_banner(cfg: ExperimentConfig) -> str:
    rounds = f"{cfg.al.rounds} active-learning round{'s' if cfg.al.rounds != 1 else ''}"
    arms = " and ".join(cfg.al.arms)
    return f"teacher: {cfg.teacher.num_layers} layers, {rounds} ({arms})"


def _sweep(study: StudyRun) -> dict[str, Any]:
    from raydistill.trainables.sweep import run_sweep

    _check_teacher(study.run, study.force)
    labeled = manifest.finished(study.run)["teacher"]["labeled"]
    resume = study.run.tune_experiment.exists() if study.resume_sweep is None else study.resume_sweep
    run_sweep(study.cfg, study.run, study.data, labeled, resume=resume)
    return {}


def _winner(study: StudyRun) -> dict[str, Any]:
    from raydistill.trainables.winner import export_winner

    export_winner(study.cfg, study.run, study.data)
    return {}


def _report(study: StudyRun) -> dict[str, Any]:
    from raydistill.platform.report import write_report

    path = write_report(study.run.root)
    study.run.point_latest(study.cfg.name)
    return {"path": path.relative_to(study.run.root).as_posix()}


def _serve(study: StudyRun) -> dict[str, Any]:
    serve_and_bench(study.cfg, study.run, study.keep_serving)
    return {}


STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("teacher", (), "teacher/ (weights, logits, card), labels/, al/curve.csv, the labelled set",
          _teacher_banner, _teacher),
    Stage("sweep", ("teacher",), "tune/students/ (every trial's results, checkpoint and logits)",
          lambda cfg: (f"sweep: {len(cfg.sweep.strategies)} strategies x {len(cfg.sweep.temperatures)} "
                       f"temperatures x {len(cfg.sweep.seeds)} seeds"), _sweep),
    Stage("winner", ("sweep",), "student/ (weights, logits, card)", None, _winner),
    Stage("report", (), "report.md, the CSVs, study.json, plots/, the model cards", lambda cfg: "report",
          _report),
    Stage("serve", ("teacher", "winner"), "bench.json, bench.md, plots/bench.png", lambda cfg: "serve + bench",
          _serve),
]}


def run_stages(study: StudyRun, names: Sequence[str], again: Sequence[str] = ("report", "serve")) -> dict[str, dict]:
    """Run the unfinished stages among ``names`` in registry order (those in ``again`` even when
    finished: they read what the others made), recording each in the ledger; returns what every
    finished stage handed on. Raises CheckpointError when a stage's input stage is unfinished."""
    attach_run_log(study.run.root)
    done = manifest.finished(study.run)
    for stage in (STAGES[name] for name in STAGES if name in names):
        if stage.name in done and stage.name not in again:
            continue
        missing = [need for need in stage.needs if need not in done]
        if missing:
            raise CheckpointError(f"{study.run.root} has no finished {' or '.join(missing)} stage, which the "
                                  f"{stage.name} stage reads: finish it first (raydistill run --resume {study.run.root})")
        if stage.banner is not None:
            _banner(stage.banner(study.cfg))
        info = stage.run(study)
        # a data file edited afterwards is refused like a config edit
        data_sha256 = study.data.dataset.fingerprint() if "data" in stage.inputs else None
        record_stage(study.run, study.cfg, stage.name, info, data_sha256)
        done = manifest.finished(study.run)
    return done


def record_stage(run: RunDir, cfg: ExperimentConfig, name: str, info: dict[str, Any],
                 data_sha256: str | None = None) -> None:
    """Mark stage ``name`` finished in the ledger with what it hands on (``info``), the config
    values and data it was built from, the code version and its files' hashes."""
    inputs = _stage_inputs(cfg, name)
    if data_sha256:
        inputs["data_sha256"] = data_sha256
    manifest.record(run, name, inputs, code=f"raydistill {__import__('raydistill').__version__} ({_git_sha() or 'no git'})",
                    info=info)


def _check_teacher(run: RunDir, force: bool) -> None:
    """Stop before the sweep when the teacher does not beat the majority class (``force``: warn)."""
    from raydistill.platform.report.assemble import teacher_check

    check = teacher_check(run)
    if check is None or check.beats_majority:
        return
    if not force:
        raise TeacherError(f"{check.sentence()}; nothing distilled from it could be trusted. Fix the data "
                           "or the recipe, or run again with --force to go on regardless")
    log.warning(f"warning: {check.sentence()} (--force: going on; the report will say so first)")


def run_study(cfg: ExperimentConfig, run: RunDir, serve: bool = True, keep_serving: bool = False,
              force: bool = False) -> dict[str, Any]:
    """Run every unfinished stage of the study in ``run``; returns a summary for printing.
    Raises TeacherError after the teacher stage when the teacher does not beat the majority
    class, unless ``force`` (then the report and the summary say so first)."""
    from raydistill.platform.report import al_comparison, analyse, format_table, strategy_sentence, verdict_sentence

    started = time.monotonic()
    study = StudyRun(cfg, run, force=force, keep_serving=keep_serving)
    run_stages(study, [name for name in STAGES if serve or name != "serve"])
    analysis = analyse(run.root)
    verdict = verdict_sentence(analysis.cells)
    result(format_table(analysis.cells, analysis.teacher))
    result(verdict)
    strategies = strategy_sentence(analysis.layer.strategies) if analysis.layer is not None else None
    if strategies:
        result(strategies)
    al = al_comparison(run.root)
    summary = {"run_dir": str(run.root), "report": str(run.report), "winner": study.card("student"),
               "teacher": study.card("teacher"), "verdict": verdict, "strategies": strategies,
               "active_learning": list(al["sentence"]) if len(al) else []}
    if serve and run.bench_json.is_file():
        summary["bench"] = json.loads(run.bench_json.read_text(encoding="utf-8"))
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
