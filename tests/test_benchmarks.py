"""Every benchmark script starts and explains itself (``--help``), so none rots unnoticed between
the runs that fill benchmarks/RESULTS.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parent.parent / "benchmarks").glob("*.py"))


@pytest.mark.unit
@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_help_runs_and_describes_it(script: Path) -> None:
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("usage: ") and len(out.stdout.splitlines()) > 3


@pytest.mark.unit
def test_every_benchmark_is_listed_in_the_reference() -> None:
    root = BENCHMARKS[0].parent.parent
    reference = (root / "docs" / "reference.md").read_text(encoding="utf-8")
    missing = [p.name for p in BENCHMARKS if f"`{p.name}" not in reference]
    assert not missing, f"benchmarks missing from docs/reference.md's table: {missing}"
    assert "docs/reference.md" in (root / "README.md").read_text(encoding="utf-8")
