"""What raydistill says while it works: one ``raydistill`` logger, concise lines on the console,
every line with a timestamp in ``RUN/run.log``.

Stages report progress with ``log.info("[sweep] ...")``; what a command exists to show (the
results table, the verdict, the summary) goes through :func:`result`, which ``--quiet`` keeps.
Warnings and errors go to stderr. ``--verbose`` adds debug lines and lets Ray's and
transformers' own output through; otherwise Serve's INFO chatter and the weight-loading bars
go to ``run.log`` only (their warnings and errors still reach the console).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from raydistill.platform.rundir import RUN_LOG

log = logging.getLogger("raydistill")
log.setLevel(logging.INFO)  # run.log gets progress lines even where nothing configured a console
RESULT = 25  # between INFO and WARNING: what --quiet still shows
# Libraries whose records also go to run.log; their console output is cut to warnings.
_LIBRARY_LOGGERS = ("ray", "ray.serve", "ray.tune", "ray.train", "transformers")
logging.addLevelName(RESULT, "RESULT")


class _Console(logging.Handler):
    """stdout below WARNING, stderr from WARNING up; looks the streams up at each record, so a
    redirected or captured ``sys.stdout`` gets what is written after the redirection."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # a closed pipe must not turn a log line into a crash
            self.handleError(record)


def result(message: str) -> None:
    """A line the command exists to show: printed even with ``--quiet``, and in run.log."""
    log.log(RESULT, message)


_quiet_libraries = False


def configure(verbosity: int = 0) -> None:
    """Console output for one command: -1 quiet, 0 normal, 1 verbose. Safe to call again."""
    global _quiet_libraries
    _quiet_libraries = verbosity < 1
    log.setLevel(logging.DEBUG)
    log.propagate = False
    for handler in [h for h in log.handlers if isinstance(h, _Console)]:
        log.removeHandler(handler)
    console = _Console(level={-1: RESULT, 0: logging.INFO}.get(verbosity, logging.DEBUG))
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if verbosity < 1:
        # Set before transformers is imported here and inherited by Ray's local workers.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:
            import transformers

            transformers.utils.logging.disable_progress_bar()
    quiet_libraries()


def quiet_libraries() -> None:
    """Cut the console handlers of Ray's and transformers' loggers to warnings (unless the
    command is verbose, or logging was never configured: a library user keeps Ray's output).
    Call again after importing a library that adds its own handler (``ray.serve``)."""
    if not _quiet_libraries:
        return
    for name in _LIBRARY_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if type(handler) is not logging.FileHandler and isinstance(handler, logging.StreamHandler):
                handler.setLevel(logging.WARNING)


def attach_run_log(run_root: str | Path) -> Path:
    """From now on every line (ours, and Ray's and transformers' records) is also appended to
    ``RUN/run.log``; a resumed run adds to the same file. Attaching the log already attached
    changes nothing. Returns its path."""
    path = Path(run_root) / RUN_LOG
    if any(isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.absolute()
           for h in log.handlers):
        return path
    detach_run_log()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for logger in (log, *map(logging.getLogger, _LIBRARY_LOGGERS)):
        logger.addHandler(handler)
    return path


def detach_run_log() -> None:
    """Close run.log (the end of a command, or before attaching another run's)."""
    for logger in (log, *map(logging.getLogger, _LIBRARY_LOGGERS)):
        for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)
                        and Path(h.baseFilename).name == RUN_LOG]:
            logger.removeHandler(handler)
            handler.close()
