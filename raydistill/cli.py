"""The raydistill command line: run a distillation study, or one stage of it, and serve it.

Every command that works on an existing run takes the run directory; every command that takes a
config takes a preset name (``raydistill configs`` lists them) or a path. Errors raised on
purpose (:class:`RaydistillError`) print one clear message and exit 2; anything else prints one
line and exits 1 (its traceback with ``--debug``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import raydistill
from raydistill.platform import logs
from raydistill.platform.config import PRECISIONS
from raydistill.platform.errors import RaydistillError
from raydistill.platform.logs import log, result


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set teacher.num_layers=6 (repeatable)")
    _add_verbosity(p)


def _add_verbosity(p: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    """--verbose / --quiet / --debug, accepted before the subcommand (``default`` False there) and
    after it (SUPPRESS: the subcommand's parser leaves what the main parser set)."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--verbose", action="store_true", default=default,
                       help="debug lines, and Ray's and transformers' own output")
    group.add_argument("--quiet", action="store_true", default=default,
                       help="only results, warnings and errors (run.log keeps all)")
    p.add_argument("--debug", action="store_true", default=default, help="show the traceback of an unexpected error")


CONFIG_HELP = "a preset name (see `raydistill configs`) or a YAML file"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raydistill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"raydistill {raydistill.__version__}")
    _add_verbosity(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="the whole study: teacher -> sweep -> report -> serve -> bench")
    p.add_argument("config", nargs="?", help=f"{CONFIG_HELP} (default: the embedded default)")
    p.add_argument("--no-serve", action="store_true", help="skip serving and the benchmark")
    p.add_argument("--keep-serving", action="store_true", help="keep the deployments up (Ctrl-C ends)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last finished stage")
    p.add_argument("--force", action="store_true",
                   help="go on when the teacher does not beat the majority class (the report says so first)")
    p.add_argument("--dashboard", action="store_true",
                   help="a local run starts Ray's dashboard on http://127.0.0.1:8265 (loopback only)")
    _add_overrides(p)
    p = sub.add_parser("teacher", help="train the teacher with active learning (a new run)")
    p.add_argument("config", help=CONFIG_HELP)
    _add_overrides(p)
    p = sub.add_parser("sweep", help="the student sweep for a run whose teacher exists")
    p.add_argument("run_dir")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep (Tuner.restore)")
    _add_overrides(p)
    p = sub.add_parser("report", help="write report.md, CSVs and plots from a run's files")
    p.add_argument("run_dir")
    _add_verbosity(p)
    p = sub.add_parser("serve", help="serve a run's student and teacher over HTTP until Ctrl-C")
    p.add_argument("run_dir")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    _add_overrides(p)
    p = sub.add_parser("bench", help="throughput of student vs teacher, in process and over HTTP")
    p.add_argument("run_dir")
    _add_overrides(p)
    p = sub.add_parser("frontier", help="students of every depth from a run's teacher: accuracy against "
                       "texts/s, fp32 and int8, and the model to deploy")
    p.add_argument("run_dir")
    p.add_argument("--depths", type=_ints, default=None, metavar="1,2,...",
                   help="student depths (default: every depth 1..n-1)")
    p.add_argument("--seeds", type=_ints, default=None, metavar="0,1",
                   help="seeds a depth, at least 2 (default: the run's first two)")
    p.add_argument("--max-drop", type=float, default=None, metavar="POINTS",
                   help="without a student equivalent to the teacher, recommend the fastest within this many points")
    p.add_argument("--resume", action="store_true", help="continue an interrupted frontier")
    p.add_argument("--no-http", dest="http", action="store_false",
                   help="time the models in process only (default: over HTTP through Serve as well)")
    _add_overrides(p)
    p = sub.add_parser("predict", help="label a CSV, JSONL or Parquet table with a run's model on Ray Data")
    p.add_argument("run_dir")
    p.add_argument("--input", required=True, metavar="FILE", help="a .csv, .jsonl or .parquet table")
    p.add_argument("--output", required=True, metavar="FILE",
                   help="the table with label, score and score_<label> columns added (.csv, .jsonl or .parquet)")
    p.add_argument("--model", choices=["student", "teacher"], default="student")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="int8: per-channel dynamic quantisation on the CPU; bf16 on a GPU")
    p.add_argument("--text-column", default="text")
    p.add_argument("--actors", type=int, default=1, help="model actors (each holds one model)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (and CPUs) per actor")
    p.add_argument("--force", action="store_true", help="overwrite --output")
    _add_verbosity(p)
    p = sub.add_parser("validate", help="check a config without running it")
    p.add_argument("config", nargs="?", help=f"{CONFIG_HELP} (default: the embedded default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    _add_verbosity(p)
    p = sub.add_parser("configs", help="list the presets that ship with raydistill")
    _add_verbosity(p)
    return parser


def cmd_configs(args) -> int:
    from raydistill.platform.config import DEFAULT_PRESET, presets

    for name, about in presets().items():
        mark = " (default)" if name == DEFAULT_PRESET else ""
        result(f"{name}{mark}: {about}")
    return 0


def cmd_validate(args) -> int:
    from raydistill.platform.config import check_installed, dump_config, load_config
    from raydistill.platform.data import check_data_source
    from raydistill.platform.models import resolve_pretrained

    cfg = load_config(args.config, args.overrides)
    # What would otherwise fail minutes later: a missing data file, an uninstalled model package.
    check_data_source(cfg.data)
    check_installed(cfg)
    for name in {cfg.tokenizer.pretrained, cfg.teacher.pretrained} - {None}:
        resolve_pretrained(name)
    if cfg.data.source != "hf":  # local data loads in seconds: check the sizes against it
        _check_sizes_now(cfg)
    result(dump_config(cfg).rstrip("\n"))
    return 0


def _check_sizes_now(cfg, warn: bool = True) -> None:
    """Sizes against the data, before Ray starts: refusals suggest sizes that fit; warnings
    print when ``warn`` (``run`` leaves them to the study, which checks again with the data)."""
    from raydistill.platform.data import load_dataset
    from raydistill.platform.guards import check_sizes

    dataset = load_dataset(cfg.data)
    warnings = check_sizes(cfg, len(dataset.train), len(dataset.validation))
    for warning in warnings if warn else []:
        log.warning(f"warning: {warning}")


def cmd_run(args) -> int:
    from raydistill.pipeline import new_run, open_run, preflight_study, run_study
    from raydistill.session import ray_session
    from raydistill.platform.config import check_installed, load_config
    from raydistill.platform.data import check_data_source

    if args.resume:
        run, cfg = open_run(args.resume, args.overrides)
    else:
        cfg = load_config(args.config, args.overrides)
        check_data_source(cfg.data)
        check_installed(cfg)
        if cfg.data.source != "hf":  # local data loads in seconds; a hub dataset is checked in the run
            _check_sizes_now(cfg, warn=False)
    with ray_session(args.verbose, dashboard=args.dashboard, ingress=cfg.serve.ingress):
        if not args.resume:
            preflight_study(cfg)  # before the run directory: a refusal leaves nothing behind
            run = new_run(cfg)
        log.info(f"run directory: {run.root} (log: {run.run_log})")
        try:
            summary = run_study(cfg, run, serve=not args.no_serve, keep_serving=args.keep_serving,
                                force=args.force)
        except RaydistillError:
            log.warning(f"the run directory is kept: continue it with `raydistill run --resume {run.root}`")
            raise
        _print_summary(summary)
        if args.keep_serving and not args.no_serve:
            _block_until_interrupted(f"serving at http://{cfg.serve.host}:{cfg.serve.port}/")
    return 0


def _print_summary(summary: dict) -> None:
    """The verdict first (it decides whether there is a winner at all), then the exported
    student's figures, the active-learning sentences and the serving ratios."""
    from raydistill.platform.metrics import ACCURACY

    winner, teacher = summary["winner"], summary["teacher"]
    result("\n=== summary ===")
    result(summary["verdict"])
    if summary.get("strategies"):
        result(summary["strategies"])
    result(f"exported student: {winner.strategy} (teacher layers {winner.teacher_layers}), "
           f"T={winner.temperature:g}, seed {winner.seed} (best validation of its cell): cell val acc "
           f"{winner.cell_validation_accuracy:.4f} (mean of {len(winner.seeds) or 1} seeds), test acc "
           f"{winner.cell_test_accuracy:.4f} ± {winner.cell_test_accuracy_std:.4f} over its seeds; teacher val acc "
           f"{teacher.validation[ACCURACY]:.4f}, test acc {teacher.test[ACCURACY]:.4f}")
    for sentence in summary.get("active_learning", []):
        result(f"active learning: {sentence}")
    for line in (summary.get("bench") or {}).get("headline", []):
        result(line)
    result(f"report: {summary['report']}\nrun directory: {summary['run_dir']} ({summary['wall_s']:.0f}s)")


def _block_until_interrupted(message: str) -> None:
    """Serve until Ctrl-C or SIGTERM (what `kill`, systemd and Kubernetes send), then shut Serve
    down; the caller's ``ray_session`` then stops the Ray it started. The SIGTERM handler is
    installed here, after ``ray.init`` (which installs Ray's own): without it the process died
    at once and Ray's processes lingered for minutes."""
    from raydistill.serve.app import shutdown

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    result(f"{message} - press Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("shutting down")
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutdown()


def cmd_teacher(args) -> int:
    from raydistill.pipeline import StudyRun, new_run, run_stages
    from raydistill.platform.config import load_config
    from raydistill.session import ray_session

    cfg = load_config(args.config, args.overrides)
    run = new_run(cfg)
    log.info(f"run directory: {run.root} (log: {run.run_log})")
    with ray_session(args.verbose):
        run_stages(StudyRun(cfg, run), ["teacher"])
    result(f"teacher: {run.teacher}\nnext: raydistill sweep {run.root}")
    return 0


def cmd_sweep(args) -> int:
    from raydistill.pipeline import StudyRun, open_run, run_stages
    from raydistill.platform import manifest
    from raydistill.session import ray_session

    run, cfg = open_run(args.run_dir, args.overrides)
    for stage in ("sweep", "winner"):  # asked for: run (or resume) them, and choose the winner again
        manifest.forget(run, stage)
    with ray_session(args.verbose):
        run_stages(StudyRun(cfg, run, resume_sweep=args.resume), ["sweep", "winner"])
    result(f"sweep results: {run.tune_experiment}\nnext: raydistill report {run.root}")
    return 0


def cmd_report(args) -> int:
    from raydistill.pipeline import StudyRun, open_run, run_stages
    from raydistill.platform.report import analyse, format_table, strategy_sentence, verdict_sentence

    run, cfg = open_run(args.run_dir)
    run_stages(StudyRun(cfg, run), ["report"])
    path = run.report
    study = analyse(run.root)
    result(format_table(study.cells, study.teacher))
    result(verdict_sentence(study.cells))
    if study.layer is not None:
        result(strategy_sentence(study.layer.strategies))
    result(f"report: {path}")
    return 0


def cmd_serve(args) -> int:
    from raydistill.pipeline import open_run
    from raydistill.serve.app import deploy
    from raydistill.session import ray_session

    run, cfg = open_run(args.run_dir, args.overrides)
    with ray_session(args.verbose, ingress=cfg.serve.ingress):
        url = deploy(run.root, host=args.host or cfg.serve.host, port=args.port or cfg.serve.port)
        result(f"page: {url}/\nAPI:  {url}/v1/classify  {url}/v1/models  {url}/healthz  docs: {url}/docs")
        _block_until_interrupted("serving")
    return 0


def cmd_bench(args) -> int:
    import json

    from raydistill.pipeline import StudyRun, open_run, run_stages
    from raydistill.session import ray_session

    run, cfg = open_run(args.run_dir, args.overrides)
    with ray_session(args.verbose, ingress=cfg.serve.ingress):
        run_stages(StudyRun(cfg, run), ["serve"])
    bench = json.loads(run.bench_json.read_text(encoding="utf-8"))
    for line in bench.get("headline", []):
        result(line)
    result(f"bench: {run.bench_md}")
    return 0


def cmd_frontier(args) -> int:
    from raydistill.pipeline import StudyRun, open_run
    from raydistill.platform import manifest
    from raydistill.platform.errors import CheckpointError
    from raydistill.session import ray_session
    from raydistill.platform.rundir import PLOT_FRONTIER
    from raydistill.trainables.frontier import frontier

    run, cfg = open_run(args.run_dir, args.overrides)
    done = manifest.finished(run)
    if "teacher" not in done or "sweep" not in done:
        raise CheckpointError(f"{run.root} has no finished teacher and sweep: the frontier distils from the "
                              "teacher and takes its strategy from the sweep (raydistill run --resume RUN)")
    with ray_session(args.verbose, ingress=cfg.serve.ingress):
        outcome = frontier(cfg, run, StudyRun(cfg, run).data, done["teacher"]["labeled"], depths=args.depths,
                           seeds=args.seeds, max_drop_points=args.max_drop, resume=args.resume, http=args.http)
    result(outcome["recommendation"])
    result(f"frontier: {run.frontier_md}, {run.frontier_csv}, {run.plot(PLOT_FRONTIER)}")
    return 0


def cmd_predict(args) -> int:
    from raydistill.session import ray_session
    from raydistill.trainables.bulk_predict import predict_file

    with ray_session(args.verbose):
        out = predict_file(args.run_dir, args.input, args.output, model=args.model, precision=args.precision,
                           text_column=args.text_column, actors=args.actors, threads_per_actor=args.threads,
                           overwrite=args.force)
    result(f"{out['rows']:,} rows labelled by the {args.model} ({args.precision}) in {out['seconds']:.1f}s "
           f"({out['texts_per_s']:,.0f} texts/s) -> {args.output}")
    return 0


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


COMMANDS = {"run": cmd_run, "teacher": cmd_teacher, "sweep": cmd_sweep, "report": cmd_report,
            "serve": cmd_serve, "bench": cmd_bench, "frontier": cmd_frontier, "predict": cmd_predict,
            "validate": cmd_validate, "configs": cmd_configs}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(1 if args.verbose else -1 if args.quiet else 0)
    try:
        return COMMANDS[args.command](args)
    except RaydistillError as err:
        log.error(f"error: {err}")
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the stages' own cleanup (Serve, Ray) has run
        log.warning("interrupted")
        return 130
    except Exception as err:  # a runtime failure: one line (the traceback goes to run.log)
        if getattr(args, "debug", False):
            raise
        log.debug("traceback", exc_info=True)
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        log.error(f"error: {type(err).__name__}: {first} (run again with --debug for the traceback; "
                  "a run's run.log has it)")
        return 1
    finally:
        logs.detach_run_log()


if __name__ == "__main__":
    sys.exit(main())
