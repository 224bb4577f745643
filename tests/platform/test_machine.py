"""Where a benchmark's CPU went: CPU seconds by process over this process's tree (``/proc``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from raydistill.platform.machine import cpu_by_group, process_tree_cpu

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")

BURN = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"


def test_a_childs_cpu_is_counted_under_its_script_name(tmp_path) -> None:
    script = tmp_path / "burn_cpu.py"
    script.write_text(BURN + "import sys; sys.stdin.read()\n")  # burns 0.5 s, then waits for us
    name = f"{Path(sys.executable).name} burn_cpu.py"
    before = process_tree_cpu()
    child = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while cpu_by_group(before, process_tree_cpu()).get(name, 0.0) < 0.45 and time.monotonic() < deadline:
            time.sleep(0.05)
        used = cpu_by_group(before, process_tree_cpu())  # the child is still alive, in the tree
    finally:
        child.communicate(b"")
    assert 0.45 <= used[name] < 5.0
    assert list(used.values()) == sorted(used.values(), reverse=True)  # largest first


def test_processes_outside_the_tree_are_not_counted() -> None:
    snapshot = process_tree_cpu()
    assert 1 not in snapshot  # init is nobody's child here
    assert all(seconds >= 0 for _, seconds in snapshot.values())
    assert cpu_by_group(snapshot, snapshot) == {}
