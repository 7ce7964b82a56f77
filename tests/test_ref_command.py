"""`runtime-ref` as pip installs it (scripts/runtime-ref) starts Python without `site`, wherever pip put
the package: the fast path a user gets, not only the harness's launcher."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "runtime-ref"
VERSION = f"python{sys.version_info[0]}.{sys.version_info[1]}"


def _fake_venv(root: Path, pth_line: str | None = None, finder: str | None = None) -> Path:
    """A virtual environment of this Python: pyvenv.cfg, bin/python3, site-packages; the script in bin.

    A .pth file's ``import`` line in its site-packages leaves a mark when `site` runs: the fast path
    never runs it.  (Not a sitecustomize: Debian's Python has its own in the standard library's
    directory, which comes first on the path, so a venv's is never imported there.)
    """
    (root / "bin").mkdir(parents=True)
    os.symlink(sys.executable, root / "bin" / "python3")
    base = Path(sys.base_prefix)
    (root / "pyvenv.cfg").write_text(f"home = {base / 'bin'}\ninclude-system-site-packages = false\n")
    site = root / "lib" / VERSION / "site-packages"
    site.mkdir(parents=True)
    (site / "site-marker.pth").write_text(f"import os; open({str(root / 'site-ran')!r}, 'w').close()\n")
    if pth_line is not None:
        (site / "oci_conformance.pth").write_text(pth_line + "\n")
    if finder is not None:
        (site / "__editable___oci_conformance_0_1_0_finder.py").write_text(finder)
        (site / "__editable__.oci_conformance-0.1.0.pth").write_text(
            "import __editable___oci_conformance_0_1_0_finder; __editable___oci_conformance_0_1_0_finder.install()\n")
    shutil.copy(SCRIPT, root / "bin" / "runtime-ref")
    return root


def _run(venv: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return subprocess.run([str(venv / "bin" / "runtime-ref"), "--version"], capture_output=True, text=True,
                          timeout=60, env=env, cwd="/")


@pytest.mark.parametrize("how", ["pth-path", "editable-finder"])
def test_the_installed_command_finds_the_package_without_site(tmp_path, how):
    if how == "pth-path":
        venv = _fake_venv(tmp_path / "venv", pth_line=str(REPO))
    else:
        mapping = {"conformance": str(REPO / "conformance"), "runtime_ref": str(REPO / "runtime_ref")}
        venv = _fake_venv(tmp_path / "venv", finder=f"MAPPING: dict[str, str] = {mapping!r}\n"
                                                   "def install():\n    raise SystemExit('the finder ran')\n")
    done = _run(venv)
    assert done.returncode == 0 and done.stdout.startswith("runtime-ref version"), done.stderr
    assert not (venv / "site-ran").exists(), "site ran: the command took the slow path"


def test_an_installation_it_cannot_read_falls_back_to_the_interpreter_s_own_start(tmp_path):
    venv = _fake_venv(tmp_path / "venv")  # nothing the script reads names the package: only `site` finds it
    (venv / "lib" / VERSION / "site-packages" / "site-marker.pth").write_text(
        f"import sys; sys.path.append({str(REPO)!r}); open({str(venv / 'site-ran')!r}, 'w').close()\n")
    done = _run(venv)
    assert done.returncode == 0 and done.stdout.startswith("runtime-ref version"), done.stderr
    assert (venv / "site-ran").exists()
