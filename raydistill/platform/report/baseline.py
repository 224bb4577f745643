"""The teacher against the majority class: a study whose teacher does not beat always answering
the most frequent label says so first and crowns no winner (the pipeline stops before the sweep
unless ``--force``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from raydistill.platform.report.bootstrap import paired_bootstrap
from raydistill.platform.report.stats import CONFIDENCE


@dataclass(frozen=True)
class TeacherCheck:
    accuracy: float
    majority: float
    diff: float  # accuracy - majority
    ci_low: float
    ci_high: float

    @property
    def beats_majority(self) -> bool:
        return self.ci_low > 0

    def sentence(self) -> str:
        return (f"the teacher ({self.accuracy:.3f} on validation) does not beat the majority class "
                f"({self.majority:.3f}) by a significant margin: {100 * self.diff:+.1f} points "
                f"({CONFIDENCE} CI {100 * self.ci_low:+.1f} to {100 * self.ci_high:+.1f})")


def check_teacher(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> TeacherCheck:
    """The teacher's validation accuracy against always answering the most frequent label,
    paired over the validation clusters (``groups``) or examples."""
    labels = np.asarray(labels)
    majority_label = np.bincount(labels).argmax()
    teacher = (np.asarray(logits).argmax(axis=1) == labels).astype(float)
    majority = (labels == majority_label).astype(float)
    diff, low, high = paired_bootstrap(teacher, majority, groups=groups)
    return TeacherCheck(float(teacher.mean()), float(majority.mean()), diff, low, high)


UNTRUSTED = "Nothing below can be trusted: {}. No winner is named."


def untrusted_line(check: TeacherCheck | None) -> str | None:
    """The report's and the summary's first line when the teacher failed its check, else None."""
    if check is None or check.beats_majority:
        return None
    return UNTRUSTED.format(check.sentence())
