"""runtime-ref's start-up stays cheap: its modules load none of what it avoids on purpose.

Every container start pays for each import (README "Speed"); type hints cost
nothing only while ``typing`` and runtime_ref/hints.py stay out of run time.
"""
from __future__ import annotations

import subprocess

from conftest import LAUNCHER, REPO

#: what runtime-ref reaches through C modules (_json, _signal, _ctypes, _thread), through libc (fcntl's
#: ioctl, resource's prlimit: each module is a library load per start) or not at all
AVOIDED = {"typing", "json", "signal", "enum", "re", "argparse", "subprocess", "ctypes", "threading",
           "fcntl", "resource", "runtime_ref.hints"}


def _python() -> str:
    """The interpreter of the fast launcher (its #! line)."""
    return LAUNCHER.read_text().splitlines()[0][2:].split()[0]


def test_importing_every_module_loads_nothing_slow():
    modules = sorted(p.stem for p in (REPO / "runtime_ref").glob("*.py")
                     if p.stem not in ("__init__", "__main__", "hints"))
    code = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
            + "".join(f"import runtime_ref.{m}\n" for m in modules)
            + f"print(' '.join(sorted(set({sorted(AVOIDED)!r}) & set(sys.modules))))")
    done = subprocess.run([_python(), "-IS", "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == [], f"imported at run time: {done.stdout}"
    assert len(modules) > 15 and "process" in modules

