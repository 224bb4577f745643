"""The depth frontier (``raydistill frontier``): students of other depths distilled from the run's
teacher as Tune trials, compared with the teacher by the report's policy, timed fp32 and int8 in
process and over HTTP, one recommendation; resumable like the sweep."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from raydistill.platform import manifest
from raydistill.platform import metrics as M
from raydistill.platform.errors import ConfigError
from raydistill.platform.report.stats import EQUIVALENT, INCONCLUSIVE, WORSE
from raydistill.platform.rundir import FRONTIER_EXPERIMENT, PLOT_FRONTIER, RunDir, TrialDir
from raydistill.trainables.frontier import frontier, plan_frontier, recommend

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]


@pytest.fixture
def study_copy(tiny_study_run, tmp_path):
    cfg, run, data, _ = tiny_study_run
    copy = RunDir(tmp_path / run.root.name)
    shutil.copytree(run.root, copy.root)
    return cfg, copy, data


def test_the_frontier_distils_times_and_recommends(study_copy) -> None:
    cfg, run, data = study_copy
    labeled = manifest.finished(run)["teacher"]["labeled"]
    out = frontier(cfg, run, data, labeled, depths=[1, 2], seeds=[0, 1], max_drop_points=100.0, seconds=1.0)
    plan = out["plan"]
    assert plan.strategy in ("uniform", "bottom", "top", "even", "odd") and plan.strategy in plan.reason
    table = pd.read_csv(run.frontier_csv)
    assert len(table) == 6  # teacher, depth 1, depth 2; fp32 and int8 each
    n = cfg.teacher.num_layers
    assert sorted(zip(table["model"], table["layers"], table["precision"])) == sorted(
        (m, k, p) for m, k in [("teacher", n), ("student", 1), ("student", 2)] for p in ("fp32", "int8"))
    fp32 = table[table["precision"] == "fp32"].set_index("layers")
    assert fp32.loc[n, "verdict"] == "best" and fp32.loc[n, "diff_vs_teacher"] == 0
    assert set(fp32.loc[[1, 2], "verdict"]) <= {WORSE, EQUIVALENT, INCONCLUSIVE}
    assert (fp32.loc[[1, 2], "seeds"] == 2).all() and (fp32.loc[[1, 2], "ci_low"] <= fp32.loc[[1, 2], "diff_vs_teacher"]).all()
    # the accuracy of a depth is its seeds' mean, from the trials' own validation logits
    from raydistill.trainables.frontier import depth_results

    done = depth_results(run, cfg)
    labels = np.load(run.eval_labels("validation"))
    for k in (1, 2):
        accs = [M.correctness(np.load(TrialDir(d).val_logits), labels).mean() for d in done[done[M.NUM_LAYERS] == k]["trial_dir"]]
        assert fp32.loc[k, M.VAL_ACCURACY] == pytest.approx(np.mean(accs))
    int8 = table[table["precision"] == "int8"]
    assert int8["int8_verdict"].isin([WORSE, EQUIVALENT, INCONCLUSIVE]).all() and (int8["seeds"] == 1).all()
    assert (table["texts_per_s"] > 0).all() and (table["params"] > 0).all()
    # every model answered over HTTP through one Serve application, gone afterwards
    from raydistill.serve.app import serve_http_address

    assert (table["http_texts_per_s"] > 0).all()
    teacher_fp32 = table[(table["model"] == "teacher") & (table["precision"] == "fp32")]
    assert teacher_fp32["http_speedup"].iloc[0] == pytest.approx(1.0)
    assert serve_http_address() is None
    assert table.set_index(["layers", "precision"]).loc[(1, "fp32"), "params"] < table.set_index(
        ["layers", "precision"]).loc[(n, "fp32"), "params"]
    assert table["pareto"].any() and table["recommended"].sum() == 1  # --max-drop 100 admits any student
    assert "recommended: the" in out["recommendation"]
    assert run.plot(PLOT_FRONTIER).stat().st_size > 10_000
    assert out["recommendation"] in run.frontier_md.read_text()
    # resumable like the sweep: a second call runs no trial
    from raydistill.trainables.frontier import run_frontier

    assert run_frontier(cfg, run, data, labeled, plan, resume=True) == 0
    assert len(list(run.experiment(FRONTIER_EXPERIMENT).glob("train_student_*"))) == 4


def test_the_plan_needs_two_seeds_and_depths_below_the_teachers(study_copy) -> None:
    cfg, run, _ = study_copy
    with pytest.raises(ConfigError, match="at least 2 seeds"):
        plan_frontier(run, cfg, [1], [0])
    n = cfg.teacher.num_layers
    with pytest.raises(ConfigError, match=rf"depths must lie in 1\.\.{n - 1}"):
        plan_frontier(run, cfg, [n], [0, 1])
    assert plan_frontier(run, cfg, None, [0, 1]).depths == list(range(1, n))


def test_the_recommendation_rule() -> None:
    table = pd.DataFrame([
        {"model": "teacher", "layers": 6, "precision": "fp32", "verdict": "best", "int8_verdict": None,
         "diff_vs_teacher": 0.0, "texts_per_s": 100.0, "speedup": 1.0},
        {"model": "student", "layers": 3, "precision": "fp32", "verdict": EQUIVALENT, "int8_verdict": None,
         "diff_vs_teacher": -0.004, "texts_per_s": 200.0, "speedup": 2.0},
        {"model": "student", "layers": 3, "precision": "int8", "verdict": None, "int8_verdict": INCONCLUSIVE,
         "diff_vs_teacher": -0.01, "texts_per_s": 450.0, "speedup": 4.5},
        {"model": "student", "layers": 1, "precision": "fp32", "verdict": WORSE, "int8_verdict": None,
         "diff_vs_teacher": -0.05, "texts_per_s": 600.0, "speedup": 6.0},
    ])
    index, sentence = recommend(table)
    assert index == 1 and "3-layer student (fp32)" in sentence  # int8 not shown equivalent to its fp32
    table.loc[2, "int8_verdict"] = EQUIVALENT
    assert recommend(table)[0] == 2
    table.loc[1, "verdict"] = INCONCLUSIVE
    assert recommend(table)[0] is None and "--max-drop" in recommend(table)[1]
    index, sentence = recommend(table, max_drop_points=2.0)
    assert index == 2 and "within --max-drop 2" in sentence
