"""The keys of ``bench.json``: written by the serving bench (:mod:`raydistill.serve.bench`),
read back by ``raydistill.results`` and the results page, so both live here.

A *series* is a model at a precision (``student``, ``teacher``, ``student_int8``); an HTTP
measurement is keyed ``<series>_<stack>``, the stack being ``batched`` or ``per_request``.
"""

from __future__ import annotations

from typing import Any

STACKS = ("batched", "per_request")


def series_name(model: str, precision: str) -> str:
    """The model, with its precision unless fp32 (``student_int8``)."""
    return model if precision == "fp32" else f"{model}_{precision}"


def target_key(series: str, stack: str) -> str:
    return f"{series}_{stack}"


def split_key(key: str) -> tuple[str, str]:
    """``student_int8_batched`` -> (``student_int8``, ``batched``). Raises ValueError otherwise."""
    for stack in STACKS:
        if key.endswith(f"_{stack}"):
            return key[: -len(stack) - 1], stack
    raise ValueError(f"not a bench key: {key!r}")


def series_of(result: dict[str, Any]) -> list[str]:
    """The series a bench result measured (older results: their models, all fp32)."""
    return list(result.get("series") or result.get("models") or [])
