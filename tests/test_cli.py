"""The command line on the session's tiny run: resume finishes the serve stage, report works
from disk, and user mistakes exit 2 with a message."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml

from raydistill.cli import main

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


def test_resume_runs_only_the_unfinished_serve_stage(tiny_study_run, tmp_path, capsys):
    from ray import serve

    _, run, _, _ = tiny_study_run
    copy = tmp_path / run.root.name
    shutil.copytree(run.root, copy)
    stages = json.loads((copy / "manifest.json").read_text())["stages"]
    assert "serve" not in stages and {"teacher", "sweep", "winner", "report"} <= set(stages)
    assert main(["run", "--resume", str(copy), "--force", "--set", "serve.port=8765"]) == 0
    out = capsys.readouterr().out
    assert "=== teacher" not in out and "=== sweep" not in out  # finished stages are skipped
    assert "=== summary ===" in out and "exported student:" in out
    bench = json.loads((copy / "bench.json").read_text())
    assert bench and (copy / "bench.md").is_file() and (copy / "plots" / "bench.png").stat().st_size > 0
    assert "serve" in json.loads((copy / "manifest.json").read_text())["stages"]
    assert not (copy / "stages.json").exists()  # one ledger
    assert not serve.status().applications  # run shuts its deployments down
    # Every artefact of DESIGN.md's run directory is there.
    for name in ("config.yaml", "meta.json", "train", "teacher/model.safetensors", "teacher/tokenizer.json",
                 "al/curve.csv", "al/curve.png", "tune/students", "student/model.safetensors",
                 "student/provenance.json", "report.md", "results.csv", "summary.csv", "bench.json",
                 "plots/val_accuracy.png", "plots/learning_curves.png", "plots/active_learning.png"):
        assert (copy / name).exists(), name
    # The printed summary leads with the report's verdict, then names the exported student.
    provenance = json.loads((copy / "student" / "provenance.json").read_text())
    summary = out.split("=== summary ===", 1)[1].strip().splitlines()
    verdict = next(line for line in (copy / "report.md").read_text().splitlines() if line.startswith("**Verdict:**"))
    assert summary[0] == verdict.removeprefix("**Verdict:** ")
    strategies = next(line for line in (copy / "report.md").read_text().splitlines()
                      if line.startswith("**Strategies, temperatures pooled:"))
    assert summary[1] == strategies.strip("*")
    assert summary[2].startswith(f"exported student: {provenance['strategy']} ")
    for name in ("plots/forest.png", "labels/test_unseen.npy"):
        assert (copy / name).exists(), name
    assert "## Confirmation on test examples no choice has seen" in (copy / "report.md").read_text()
    assert f"**{provenance['strategy']}**, T={provenance['temperature']:g}" in (copy / "report.md").read_text()
    # A copied run refers to itself: no file of ours names the original's place, and the
    # serve config written by the resumed serve stage points at the copy.
    for name in ("report.md", "results.csv", "summary.csv", "manifest.json", "bench.json",
                 "bench.md", "meta.json", "student/provenance.json"):
        assert str(run.root) not in (copy / name).read_text(encoding="utf-8"), name
    results = pd.read_csv(copy / "results.csv")
    assert all((copy / d / "result.json").is_file() for d in results["trial_dir"].dropna())
    assert yaml.safe_load((copy / "serve_config.yaml").read_text())["applications"][0]["args"]["run_dir"] == str(copy)
    # run.log: the first run's lines, then the resumed command's, with what the console showed
    log = (copy / "run.log").read_text()
    assert log.index("[sweep]") < log.index("=== serve + bench ===") < log.index("=== summary ===")
    assert "[bench] over HTTP" in log and "INFO raydistill:" in log


def test_report_command_prints_the_table(tiny_study_run, capsys):
    _, run, _, _ = tiny_study_run
    assert main(["report", str(run.root)]) == 0
    out = capsys.readouterr().out
    assert "uniform" in out and str(run.report) in out


def test_sweep_without_a_teacher_is_a_clear_error(make_tiny_config, tmp_path, capsys):
    from raydistill.pipeline import new_run

    run = new_run(make_tiny_config(tmp_path))
    assert main(["sweep", str(run.root)]) == 2
    assert "no finished teacher stage" in capsys.readouterr().err


def test_report_on_a_non_run_directory(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_a_finished_study_is_its_names_latest(tiny_study_run):
    """The report stage points ``<runs_dir>/<name>-latest`` at the run (a relative link)."""
    import os

    cfg, run, _, _ = tiny_study_run
    link = run.root.parent / f"{cfg.name}-latest"
    assert link.is_symlink() and os.readlink(link) == run.root.name
    assert link.resolve() == run.root.resolve() and (link / "report.md").is_file()


@pytest.mark.unit
def test_an_unexpected_error_is_one_line_and_exit_1_unless_debug(monkeypatch, capsys, tmp_path):
    from raydistill import cli

    def broken(args):
        raise RuntimeError("disk quota exceeded\nsecond line of detail")

    monkeypatch.setitem(cli.COMMANDS, "report", broken)
    assert cli.main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "error: RuntimeError: disk quota exceeded (run again with --debug" in err
    assert "Traceback" not in err and "second line" not in err
    with pytest.raises(RuntimeError, match="disk quota"):
        cli.main(["report", str(tmp_path), "--debug"])


@pytest.mark.unit
def test_version_presets_help_and_verbosity_anywhere(capsys):
    from raydistill.cli import _parser

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == "raydistill 0.1.0"
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith("default (default): The embedded default: Rotten Tomatoes sentences")
    assert [line.split(":")[0] for line in listed[1:]] == ["imdb-bert-base", "mnli-bert-base", "own-csv", "sst2", "tiny-12l"]
    text = _parser().format_help()
    assert "``" not in text and "run a distillation study" in text
    # --quiet / --verbose before or after the subcommand
    for argv in (["--quiet", "validate"], ["validate", "--quiet"]):
        args = _parser().parse_args(argv)
        assert args.quiet is True and args.verbose is False and args.config is None
    assert _parser().parse_args(["--verbose", "report", "runs/x"]).verbose is True
    # a preset by name, the default with no argument
    assert main(["validate", "tiny-12l", "--quiet"]) == 0
    assert "name: tiny-12l" in capsys.readouterr().out
    assert main(["validate", "no-such-preset"]) == 2
    assert "nor a preset of that name; presets: default, imdb-bert-base" in capsys.readouterr().err


@pytest.mark.unit
def test_the_own_data_recipe_on_a_few_hundred_and_a_few_thousand_rows(tmp_path, capsys):
    """The README's recipe: a CSV the user has, the own-csv preset, sizes suggested when the
    preset's do not fit (a few hundred rows), accepted as they are for a few thousand."""
    import numpy as np

    rng = np.random.default_rng(0)
    words = {0: ["dull", "flat", "tedious", "weak"], 1: ["moving", "sharp", "funny", "warm"]}

    def write(n: int) -> str:
        labels = rng.integers(0, 2, n)
        rows = [f"{' '.join(rng.choice(words[y], 3))} film number {i}" for i, y in enumerate(labels)]
        path = tmp_path / f"reviews{n}.csv"
        pd.DataFrame({"text": rows, "label": np.where(labels == 1, "positive", "negative")}).to_csv(path, index=False)
        return str(path)

    small = write(300)
    assert main(["validate", "own-csv", "--set", f"data.path={small}"]) == 2
    err = capsys.readouterr().err
    assert "the pool has only 180 examples; sizes that fit it: --set al.initial_labeled=45 --set al.query_size=22 " \
           "--set al.rounds=2 --set student.transfer_size=null" in err
    fits = ["--set", "al.initial_labeled=45", "--set", "al.query_size=22", "--set", "al.rounds=2"]
    assert main(["validate", "own-csv", "--set", f"data.path={small}", *fits]) == 0
    out = capsys.readouterr()
    assert "the validation split has 60 examples" in out.err and "about 9,375 examples would do" in out.err
    assert main(["validate", "own-csv", "--set", f"data.path={write(3000)}"]) == 0
    assert "name: own-csv" in capsys.readouterr().out
