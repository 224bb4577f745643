"""raydistill as a stranger installs it: a wheel, used from outside the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.slow


def test_the_wheel_ships_the_presets_and_resolves_them_outside_the_source_tree(tmp_path, repo_root) -> None:
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(repo_root)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    wheel = next((tmp_path / "dist").glob("raydistill-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    presets = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("raydistill/configs/") and n.endswith(".yaml"))
    assert presets == ["default.yaml", "imdb-bert-base.yaml", "mnli-bert-base.yaml", "own-csv.yaml",
                       "sst2.yaml", "tiny-12l.yaml"]
    assert "raydistill/serve/page/index.html" in names
    # The installed copy (the wheel's files, first on the path), run from a directory with no configs/.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = ("import raydistill, sys; from raydistill.platform.config import load_config, resolve_config; "
             "print(raydistill.__file__); print(resolve_config(None)); print(load_config(None).name); "
             "print(load_config('tiny-12l').name)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    module, default, name, smoke = out.stdout.split()
    assert module.startswith(str(site)) and default.startswith(str(site))
    assert (name, smoke) == ("minilm-rt", "tiny-12l")
