"""This host's process table, read from /proc: who names what, and killing what is ours.

The harness finds the processes it must stop by what their command line
names (a runtime's ``--root``, a private containerd's ``--config``, a shim's
``-address``): those paths carry the run's tag and pid, so nothing that is
not ours is ever matched.  Drivers, the engine and the sweep of killed runs
all read the table the same way, here.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

#: how long killed processes get to become zombies (or vanish) before we stop waiting
KILL_WAIT_S = 2.0


def cmdlines() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every process but this one; kernel threads (empty argv) and the vanished are skipped."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if raw:
            yield int(entry), raw.decode(errors="replace").rstrip("\0").split("\0")


def naming(marks: set[str] | str) -> list[int]:
    """Pids whose command line has an argument containing one of ``marks``."""
    wanted = {marks} if isinstance(marks, str) else marks
    return [pid for pid, args in cmdlines() if any(m in arg for arg in args for m in wanted)]


def process_state(pid: int) -> str | None:
    """The one-letter state of a process (Z for a zombie), None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def exe_id(pid: int) -> tuple[int, int] | None:
    """(device, inode) of the file a process runs (``/proc/<pid>/exe``): which program it is now,
    comparable across mount namespaces; None once it is gone (or for a kernel thread)."""
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def alive(pid: int) -> bool:
    """The process runs (a zombie has ended: its owner just has not reaped it)."""
    return process_state(pid) not in ("Z", None)


def kill_all(pids: list[int], wait: float = KILL_WAIT_S) -> list[int]:
    """SIGKILL ``pids`` and wait (up to ``wait`` s) until each has ended; returns the ones signalled."""
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    while killed and time.monotonic() < deadline and any(alive(p) for p in killed):
        time.sleep(0.01)
    return killed
