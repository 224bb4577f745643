"""raydistill.platform never imports Ray: it must run where Ray is not installed."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import raydistill.platform

pytestmark = pytest.mark.unit


def test_platform_imports_without_ray():
    # walk_packages reaches the subpackages' modules too (report/stats.py, report/plots.py, ...).
    modules = [m.name for m in pkgutil.walk_packages(raydistill.platform.__path__, "raydistill.platform.")]
    assert "raydistill.platform.report.stats" in modules and "raydistill.platform.layers" in modules
    code = "import sys; sys.modules['ray'] = None\n" + "".join(f"import {m}\n" for m in modules)
    code += "assert not any(k == 'ray' or k.startswith('ray.') for k, v in sys.modules.items() if v is not None)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
