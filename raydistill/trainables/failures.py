"""Deterministic failures are not retried.

Ray Train (``FailureConfig.max_failures``) restarts the worker group on any error, and Train V2
has no filter for which ones. A restart helps a lost node or a killed worker; it cannot help a
pool too small for the budget or a corrupt file, which fail the same way each time (the
reported case: a 400-row dataset took 87 s and three restarts to fail). So a worker that meets
one of raydistill's own errors records it in a file before raising; a restarted worker that
finds the record ends at once without training; the driver raises the recorded error as the
stage's one-line message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raydistill.platform import errors
from raydistill.platform.errors import RaydistillError
from raydistill.platform.rundir import atomic_write_json, fatal_file

def deterministic(err: BaseException) -> RaydistillError | None:
    """``err`` as one of raydistill's own errors (also when it crossed an actor call, where
    Ray wraps it), or None for anything else: a system failure worth a retry."""
    for candidate in (err, getattr(err, "cause", None)):
        if isinstance(candidate, RaydistillError):
            return candidate
    return None


@contextmanager
def recording(directory: str | Path) -> Iterator[None]:
    """Record a deterministic error raised inside (:func:`record`), then let it propagate."""
    try:
        yield
    except Exception as err:
        if (fatal := deterministic(err)) is not None:
            record(directory, fatal)
        raise


def record(directory: str | Path, err: RaydistillError) -> None:
    """Write ``err``'s class and message for the restarted workers and the driver."""
    cause = getattr(err, "cause", None)
    original = cause if isinstance(cause, RaydistillError) else err
    message = str(original).strip() or type(original).__name__
    atomic_write_json(fatal_file(directory), {"type": type(original).__name__, "message": message})


def recorded(directory: str | Path) -> RaydistillError | None:
    """The error a worker recorded in ``directory``, rebuilt as its class; None if none."""
    path = fatal_file(directory)
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        cls = getattr(errors, entry["type"], RaydistillError)
        message = str(entry["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return RaydistillError(f"a worker failed with a deterministic error; {path} is unreadable")
    return (cls if isinstance(cls, type) and issubclass(cls, RaydistillError) else RaydistillError)(message)


def fit(trainer: Any, directory: str | Path) -> Any:
    """``trainer.fit()`` whose workers record deterministic errors in ``directory``: raises the
    recorded error (its own class, one message) instead of Train's wrapper or a result."""
    fatal_file(directory).unlink(missing_ok=True)  # a new attempt: the cause may be fixed
    try:
        result = trainer.fit()
    except Exception:
        if (fatal := recorded(directory)) is None:
            raise
        raise fatal from None
    if (fatal := recorded(directory)) is not None:
        raise fatal
    return result
