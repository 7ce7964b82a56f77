"""The ``ps`` verb: the container's processes, as host pids.

They are the tasks of the container's cgroup (the first hierarchy's
``cgroup.procs``): that is what holds every process of the container, also
those a runaway fork put there, and nothing else.  ``--format json`` prints
the pid list, as runc's does; the table adds each command line.
"""
from __future__ import annotations

import sys

from . import cgroups
from .errors import Error
from .state import Container

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .hints import Switches


def pids(c: Container, disabled: Switches) -> list[int]:
    """The container's processes (switch ``ps``: its init only)."""
    if "ps" in disabled or "ps" in (c.data.get("disabled") or []):
        return [c.pid]
    return sorted(cgroups.pids(c.data["cgroups"]["leaves"]))


def _cmdline(pid: int) -> str:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"


def ps(root: str, cid: str, fmt: str, disabled: Switches) -> int:
    """Print the container's processes; a stopped container has none to show (an error, as runc)."""
    c = Container.load(root, cid)
    if c.status() == "stopped":
        raise Error('container "%s" is not running' % cid)
    found = pids(c, disabled)
    if fmt == "json":
        from .jsonfast import dumps
        sys.stdout.write(dumps(found) + "\n")
    else:
        sys.stdout.write("".join("%-8s %s\n" % row for row in [("PID", "CMD")] + [
            (str(p), _cmdline(p)) for p in found]))
    return 0
