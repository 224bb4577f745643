"""A Hub-format model card (``README.md``: YAML metadata, then prose) for each exported model.

Written by the report stage, which knows what the export alone does not: the verdict, the
teacher's figures and the winner's test accuracy over its seeds. ``huggingface_hub``'s
``ModelCard`` parses it; ``transformers`` loads the folder as it is.
"""

from __future__ import annotations

from typing import Any

import yaml

from raydistill.platform.config import ExperimentConfig
from raydistill.platform.export import Provenance
from raydistill.platform.metrics import ACCURACY

_DATASETS = {"embedded": "rotten_tomatoes"}  # the embedded sentences are Pang & Lee's (SST-2's source)


def _dataset(cfg: ExperimentConfig) -> str:
    data = cfg.data
    if data.source == "hf":
        return data.name or "a local HF dataset"
    return _DATASETS.get(data.source, data.path or data.source)


def _base_model(cfg: ExperimentConfig) -> str | None:
    """A Hub id to name as base_model; None for a model from a package or a local folder."""
    name = cfg.teacher.pretrained
    if not name or name.startswith("pkg:") or name.startswith((".", "/")):
        return None
    return name


def _metric(kind: str, value: float | None, name: str) -> list[dict[str, Any]]:
    return [] if value is None else [{"type": kind, "value": round(float(value), 4), "name": name}]


def model_card(cfg: ExperimentConfig, card: Provenance, verdict: str, how: str) -> str:
    """The Hub card of an exported model from its typed card (figures, what it was built from),
    ``verdict`` the study's sentence, ``how`` how it was trained."""
    model = card.role
    dataset = _dataset(cfg)
    val, test = card.validation.get(ACCURACY), card.test.get(ACCURACY)
    results = _metric(ACCURACY, val, "validation accuracy") + _metric(ACCURACY, test, "test accuracy")
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-classification",
                            "tags": ["raydistill", "knowledge-distillation", model], "datasets": [dataset],
                            "metrics": [ACCURACY]}
    if (base := _base_model(cfg)) is not None:
        meta["base_model"] = base
    if results:
        meta["model-index"] = [{"name": f"{cfg.name}-{model}", "results": [{
            "task": {"type": "text-classification", "name": "Text Classification"},
            "dataset": {"name": dataset, "type": dataset}, "metrics": results}]}]
    spread = card.cell_test_accuracy_std
    layers = (f"strategy {card.strategy}, teacher layers {card.teacher_layers}" if card.strategy is not None
              else f"all {card.num_layers}")
    figures = [f"- validation accuracy: {val:.4f}" if val is not None else None,
               (f"- test accuracy: {test:.4f}" + (f" (its cell: ± {spread:.4f} over seeds)" if spread else ""))
               if test is not None else None]
    body = [f"# {cfg.name}: the {model}", "", how, "", f"Layers: {layers}.", "", "## Figures", "",
            *[f for f in figures if f], "", "## The study's verdict", "", verdict, "", "## How to load it", "",
            "```python", "from transformers import pipeline", "",
            'classify = pipeline("text-classification", model="PATH/TO/THIS/FOLDER")',
            'classify("a gripping, beautifully acted film", top_k=None)  # every label\'s probability',
            "```", "", "Made by raydistill (`raydistill report`); the run's `report.md` has every figure and how it "
            "was decided."]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n\n" + "\n".join(body) + "\n"
