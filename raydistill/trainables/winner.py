"""The winner's export: the best-validation seed of the best-mean cell becomes ``<run>/student``,
with its logits and its card (chosen on validation, reported on test)."""

from __future__ import annotations

from pathlib import Path


from raydistill.platform import metrics as M
from raydistill.platform.config import ExperimentConfig
from raydistill.platform.errors import CheckpointError
from raydistill.platform.export import Provenance, export_model, read_provenance
from raydistill.platform.logs import log
from raydistill.platform.models import eval_batch_size
from raydistill.platform.report import COMPLETED, choose_winner, load_results, summarize
from raydistill.platform.rundir import MODEL_WEIGHTS, RunDir, TrialDir, file_sha256, load_array, save_array
from raydistill.trainables.inference import models_split_logits


def export_winner(cfg: ExperimentConfig, run: RunDir, data) -> Provenance:
    """Export the best-validation seed of the best-mean cell to ``<run>/student`` and return its
    card. The card gives the cell's test accuracy as mean ± std over seeds (chosen on
    validation, reported on test) from each trial's test logits, computed here for trials of a
    sweep that predates them."""
    results = load_results(run.root)
    strategy, temperature = choose_winner(summarize(results))
    cell = results[(results[M.STRATEGY] == strategy) & (results[M.TEMPERATURE] == temperature)
                   & (results["status"] == COMPLETED)]
    cell = cell.sort_values([M.VAL_ACCURACY, M.SEED], ascending=[False, True])
    trials = [TrialDir(Path(d)) for d in cell["trial_dir"]]
    sources = [t.last_model() for t in trials]
    missing = [i for i, t in enumerate(trials) if not t.test_logits.is_file()]
    computed = models_split_logits(
        [str(sources[i]) for i in missing], {"test": data.encoded["test"]}, eval_batch_size(cfg.student.batch_size),
        data.pad_token_id, num_cpus=min(1.0, cfg.sweep.cpus_per_trial), perf=cfg.performance) if missing else []
    for i, out in zip(missing, computed):
        save_array(trials[i].test_logits, out["test"])
    logits = {"validation": load_array(trials[0].val_logits), "test": load_array(trials[0].test_logits)}
    test_mean, test_std = M.over_seeds([M.evaluate(load_array(t.test_logits), data.encoded["test"].labels)
                                        for t in trials], M.ACCURACY)
    trial_card = read_provenance(sources[0])
    if trial_card is None:
        raise CheckpointError(f"{sources[0]} has no readable card")
    card = trial_card.model_copy(update={
        "seeds": sorted(int(s) for s in cell[M.SEED]),
        "exported": "the seed with the best validation accuracy in the winning cell",
        "teacher_sha256": file_sha256(run.teacher / MODEL_WEIGHTS),
        **{split: M.evaluate(logits[split], data.encoded[split].labels, load_array(run.teacher_logits(split)))
           for split in ("validation", "test")},
        "cell_validation_accuracy": float(cell[M.VAL_ACCURACY].mean()),
        "cell_test_accuracy": test_mean,
        "cell_test_accuracy_std": test_std,
    })
    export_model(sources[0], run.student, data.tokenizer, card, logits)
    log.info(f"[sweep] exported the best-mean cell's best seed: {strategy} T={temperature:g} "
             f"(seed {card.seed}) -> {run.student}")
    return card
