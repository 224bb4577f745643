"""The study's analysis: Tune's trial files on disk -> results -> one inference policy -> report.

One concept a module: ``trials`` (Tune files on disk -> DataFrame), ``run_files`` (the run's own
files), ``bootstrap`` (the joint draws every comparison reads), ``stats`` (the inference policy
and the per-cell summary), ``strategies`` (temperatures pooled, the temperature's effect, the
interaction), ``confirmation`` (the verdicts re-tested on unseen test examples),
``active_learning`` (the AL curve against random), ``render`` (markdown), ``plots``, ``assemble``
(the run's files -> report.md) and ``notebook`` (the run as DataFrames:
``raydistill.results(run_dir)``). Never imports Ray.
"""

from raydistill.platform.report.active_learning import (
    al_comparison,
    al_sentence,
    read_al_curve,
)
from raydistill.platform.report.assemble import (
    Study,
    analyse,
    majority_accuracy,
    study_summary,
    write_report,
)
from raydistill.platform.report.bootstrap import paired_bootstrap
from raydistill.platform.report.notebook import StudyResults, bench_frame, results
from raydistill.platform.report.plots import (
    plot_active_learning,
    plot_learning_curves,
    plot_val_accuracy,
)
from raydistill.platform.report.render import (
    format_table,
    strategy_sentence,
    verdict_sentence,
)
from raydistill.platform.report.stats import (
    POLICY,
    choose_winner,
    compare_with_best,
    summarize,
)
from raydistill.platform.report.trials import (
    COMPLETED,
    DUPLICATE,
    ERRORED,
    STOPPED_EARLY,
    completed,
    find_experiment,
    load_history,
    load_results,
    not_completed,
)

__all__ = [
    "COMPLETED", "DUPLICATE", "ERRORED", "POLICY", "STOPPED_EARLY", "Study", "al_comparison", "al_sentence", "analyse",
    "choose_winner", "compare_with_best", "completed", "find_experiment", "format_table", "load_history",
    "load_results", "majority_accuracy", "not_completed", "paired_bootstrap",
    "plot_active_learning", "plot_learning_curves", "plot_val_accuracy", "read_al_curve",
    "StudyResults", "bench_frame", "results", "strategy_sentence", "study_summary", "summarize", "verdict_sentence",
    "write_report",
]
