"""Console lines by verbosity, run.log with everything, library chatter off the console."""

from __future__ import annotations

import logging
import sys

import pytest

from raydistill.platform import logs
from raydistill.platform.logs import log, result

pytestmark = pytest.mark.unit


@pytest.fixture
def chatty_library():
    """A stand-in for Serve's logger: its own console handler, INFO level, no propagation."""
    library = logging.getLogger("ray.serve")
    saved = (library.handlers[:], library.level, library.propagate)
    library.handlers, library.propagate = [logging.StreamHandler(sys.stderr)], False
    library.setLevel(logging.INFO)
    yield library
    library.handlers, library.level, library.propagate = saved
    logs.detach_run_log()
    logs.configure()


@pytest.mark.parametrize("verbosity, shown", [(-1, ["the table"]), (0, ["progress", "the table"]),
                                              (1, ["detail", "progress", "the table"])])
def test_console_shows_what_the_verbosity_asks_for(capsys, verbosity, shown):
    logs.configure(verbosity)
    log.debug("detail")
    log.info("progress")
    result("the table")
    log.warning("careful")
    out, err = capsys.readouterr()
    assert out.splitlines() == shown
    assert err.splitlines() == ["careful"]  # warnings and errors: stderr, whatever the verbosity
    logs.configure()


def test_run_log_keeps_every_line_and_the_librarys_info(tmp_path, capsys, chatty_library):
    logs.configure(-1)
    logs.quiet_libraries()
    path = logs.attach_run_log(tmp_path)
    log.info("[sweep] 1/4 progress")
    result("verdict")
    chatty_library.info("Connecting to existing Serve app")
    chatty_library.warning("a real problem")
    logs.detach_run_log()
    log.info("after the run")
    out, err = capsys.readouterr()
    assert out.splitlines() == ["verdict"]
    assert "Connecting" not in err and "a real problem" in err  # chatter off the console, warnings on
    text = path.read_text()
    for line in ("INFO raydistill: [sweep] 1/4 progress", "RESULT raydistill: verdict",
                 "INFO ray.serve: Connecting to existing Serve app", "WARNING ray.serve: a real problem"):
        assert line in text, text
    assert "after the run" not in text
    assert text.splitlines()[0][:4].isdigit()  # each line starts with its timestamp
    logs.attach_run_log(tmp_path)  # a resumed run appends to the same file
    log.info("resumed")
    logs.detach_run_log()
    assert path.read_text().startswith(text) and "resumed" in path.read_text()


def test_verbose_leaves_library_output_alone(chatty_library):
    logs.configure(1)
    logs.quiet_libraries()
    assert chatty_library.handlers[0].level == logging.NOTSET
