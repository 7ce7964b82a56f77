"""The ``pause`` and ``resume`` verbs: the cgroup freezer, v1 and v2.

Pausing asks the kernel to freeze every task of the container's cgroup at
once, so that no process can fork past it or notice the others stop: on v1
the freezer hierarchy's ``freezer.state`` (FROZEN / THAWED; it reads
FREEZING until the last task is caught), on v2 the container's own
``cgroup.freeze`` (1 / 0), whose ``cgroup.events`` says ``frozen 1`` once all
are.  Both verbs wait for that, so that when ``pause`` returns nothing of the
container runs, as runc's does.

A paused container's status ("paused") is read from the same files each time
(state.py): it is never stored.  ``delete --force`` thaws before it kills
(container.py): on v1 a frozen task does not die of SIGKILL until thawed, and
its cgroup cannot be removed while it is there.
"""
from __future__ import annotations

import os
import time

from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .hints import CgroupSet, Switches

#: how long a freeze or a thaw may take before we give up on it (runc waits as long)
SETTLE_S = 5.0


def _files(cg: CgroupSet) -> tuple[str, str, str, str] | None:
    """(file to write, value that freezes, value that thaws, file to read back) of the container's
    freezer, or None when it has none (no freezer hierarchy on this v1 host)."""
    if cg["version"] == "v2":
        if not cg["leaves"]:
            return None
        d = cg["leaves"][0]
        return os.path.join(d, "cgroup.freeze"), "1", "0", os.path.join(d, "cgroup.events")
    for ctrl, d in zip(cg["controllers"], cg["leaves"]):
        if ctrl == "freezer":
            state = os.path.join(d, "freezer.state")
            return state, "FROZEN", "THAWED", state
    return None


def frozen(cg: CgroupSet | None, partly: bool = False) -> bool:
    """True while the container's cgroup is frozen (``partly``: or still freezing, v1)."""
    files = _files(cg) if cg else None
    if files is None:
        return False
    try:
        with open(files[0]) as f:
            value = f.read().strip()
    except OSError:
        return False
    if cg and cg["version"] == "v2":
        return value == "1"
    return value == "FROZEN" or (partly and value == "FREEZING")


def _settled(cg: CgroupSet, read_back: str, freeze: bool) -> bool:
    with open(read_back) as f:
        text = f.read()
    if cg["version"] == "v2":
        return ("frozen 1" in text) == freeze
    return text.strip() == ("FROZEN" if freeze else "THAWED")


def set_frozen(cg: CgroupSet, freeze: bool) -> None:
    """Freeze or thaw the whole cgroup, and wait until the kernel says it is done."""
    files = _files(cg)
    if files is None:
        raise Error("this host has no cgroup freezer for the container (no freezer hierarchy)")
    write_to, on, off, read_back = files
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            with open(write_to, "w") as f:
                f.write(on if freeze else off)
            if _settled(cg, read_back, freeze):
                return
        except OSError as e:
            raise Error("cannot %s the container: %s: %s" % ("freeze" if freeze else "thaw", write_to,
                                                             e.strerror)) from None
        if time.monotonic() > deadline:
            raise Error("the container's cgroup did not %s within %.0fs" % ("freeze" if freeze else "thaw",
                                                                           SETTLE_S))
        time.sleep(0.002)  # v1: FREEZING until every task is caught (writing again retries them)


def thaw_quietly(cg: CgroupSet | None) -> None:
    """Thaw whatever is frozen, for ``delete``; nothing to thaw (or no freezer) is fine."""
    if cg and frozen(cg, partly=True):
        try:
            set_frozen(cg, False)
        except (Error, OSError):
            pass


def pause(root: str, cid: str, disabled: Switches) -> None:
    """Freeze every process of a running container (switch ``freezer``: touch nothing)."""
    from .state import Container
    c = Container.load(root, cid)
    status = c.status()
    if status != "running":
        raise Error('container "%s" is not running (state %s)' % (cid, status))
    if "freezer" in disabled or "freezer" in (c.data.get("disabled") or []):
        return
    set_frozen(c.data["cgroups"], True)


def resume(root: str, cid: str, disabled: Switches) -> None:
    """Thaw a paused container."""
    from .state import Container
    c = Container.load(root, cid)
    status = c.status()
    if status != "paused":
        raise Error('container "%s" is not paused (state %s)' % (cid, status))
    if "freezer" in disabled or "freezer" in (c.data.get("disabled") or []):
        return
    set_frozen(c.data["cgroups"], False)
