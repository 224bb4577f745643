"""The sweep's progress lines name a failed or retried trial and why (no Ray needed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from raydistill.platform import logs
from raydistill.trainables.sweep import _ProgressLine

pytestmark = pytest.mark.unit


def test_retries_and_errors_are_named_with_their_cause(tmp_path, capsys) -> None:
    error = tmp_path / "error.txt"
    error.write_text("Failure # 1\nTraceback (most recent call last):\n  ...\nray.exceptions.NodeDiedError: node gone\n")
    trial = SimpleNamespace(config={"strategy": "odd", "temperature": 2.0, "seed": 1}, trial_id="ab_00003",
                            error_file=str(error), last_result={})
    logs.configure()
    progress = _ProgressLine(total=4)
    progress.on_trial_recover(0, [], trial)
    progress.on_trial_error(0, [], trial)
    lines = capsys.readouterr().err.splitlines()  # warnings: stderr
    assert lines[0] == ("[sweep] odd T=2.0 seed=1 (trial ab_00003) failed (ray.exceptions.NodeDiedError: "
                        "node gone); Tune retries it from its last checkpoint")
    assert lines[1].startswith("[sweep] 1/4 odd T=2.0 seed=1 (trial ab_00003) ERROR (ray.exceptions.NodeDiedError")
    assert progress.done == 1  # a retry is not a finished trial
