"""The unprivileged user a rootless runtime runs as: made for the session, removed after it.

The harness is root where it observes; a rootless lane's runtime processes
are not.  ``make`` adds a user of the harness's own for one driver: its own
uid and gid (``useradd``, which also gives it subordinate uid and gid ranges
in ``/etc/subuid`` and ``/etc/subgid``, used by ``newuidmap``/``newgidmap``
when a container maps more than one id), and a home that is the driver's
state root.  ``remove`` takes all of it away again: the user's processes,
the user and its group, its ranges (``userdel`` removes them) and its home.

Every user made here is named ``oci-conformance-<pid>-<n>`` and says in its
comment field which process made it and when that process started
(``/proc/<pid>/stat``).  ``sweep_dead`` removes the users whose maker is
gone — a run killed with SIGKILL could not clean up — and nothing else: a
user the machine had never carries that name and comment.  A user named
with ``--rootless-user`` (``named``) is the machine's: it is used as it is
and never changed or removed.

Standard library only: the agent runs this on remote hosts.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from conformance.model.errors import ConformanceError

from . import cgroupfs

#: ``--rootless-user NAME``: the rootless lane runs as this existing user instead of one made for the session
USER_ENV = "OCI_CONFORMANCE_ROOTLESS_USER"
NAME_PREFIX = "oci-conformance-"
#: the comment of every user made here: which process made it, so a later run can tell a dead one
COMMENT = "oci-conformance rootless user pid={pid} start={start} run={tag}"
_COMMENT_RE = re.compile(r"^oci-conformance rootless user pid=(\d+) start=(\d+) run=(\S*)$")
#: where a swept user's home may be (the drivers' state roots): nothing else is removed by a sweep
HOME_BASE = "/run/oci-conformance-"
TOOL_TIMEOUT_S = 60.0
USERDEL_TRIES = 10
#: flock'ed around every useradd/usermod/userdel of ours: the shadow tools fail at once (exit 10) when
#: another holds /etc/passwd's lock, and parallel workers of a run (xdist) make and remove users at once
#: (the directory itself: it is always there, and no file is left behind for the lock)
USERS_LOCK = "/etc"


class UserSetupError(ConformanceError):
    """The rootless user could not be made (or a named one does not exist): says which command said what."""


@dataclass(frozen=True)
class IdRange:
    """A subordinate id range: ``count`` host ids from ``start``."""

    start: int
    count: int


@dataclass(frozen=True)
class RootlessUser:
    """An unprivileged user: its ids, its subordinate ranges (None: it has none), its home."""

    name: str
    uid: int
    gid: int
    home: Path
    subuids: IdRange | None
    subgids: IdRange | None
    #: made by the harness (and removed by it); False for a user named with --rootless-user
    made: bool

    def as_user(self) -> list[str]:
        """The argv prefix that runs a command as this user: its uid and gid, no other group, the
        environment of a login as it (setpriv --reset-env: HOME, USER, a PATH with newuidmap)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--reset-env", "--"]


# -- making and removing -------------------------------------------------------------
_made_here = 0  # users made by this process so far: the <n> of the next name


def make(home: Path, tag: str) -> RootlessUser:
    """A new user for this process, owning ``home`` (made if missing); raises UserSetupError.

    What a killed run left is swept first.  Anything made before a failing
    step is removed again before the error goes on.
    """
    global _made_here
    sweep_dead()
    _made_here += 1
    name = f"{NAME_PREFIX}{os.getpid()}-{_made_here}"
    comment = COMMENT.format(pid=os.getpid(), start=_start_ticks(os.getpid()), tag=tag or "-")
    _tool(["useradd", "--no-create-home", "--no-log-init", "--home-dir", str(home), "--shell", "/usr/sbin/nologin",
           "--user-group", "--comment", comment, name], f"cannot add the rootless user {name}")
    try:
        entry = pwd.getpwnam(name)
        if not _ranges_of(name, entry.pw_uid, "/etc/subuid"):
            _add_ranges(name)  # a useradd that gives none (SUB_UID_COUNT=0): one 65536-id range each
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        home.chmod(0o700)
        return _user(entry, home, made=True)
    except BaseException:
        remove_user(name)
        raise


def named(name: str, home: Path) -> RootlessUser:
    """An existing user (``--rootless-user``), used as it is; ``home`` (made here, owned by it) is
    the driver's state root, not the user's home directory."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise UserSetupError(f"--rootless-user {name}: no such user on this host") from None
    if entry.pw_uid == 0:
        raise UserSetupError(f"--rootless-user {name}: uid 0 is root, not an unprivileged user")
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    home.chmod(0o700)
    return _user(entry, home, made=False)


def remove(user: RootlessUser) -> list[str]:
    """Remove what the harness made for ``user``; returns what could not be removed.

    A named user (not made here) keeps its account: only the state root goes.
    """
    left = [f"process {pid} of {user.name}" for pid in kill_processes(user.uid)] if user.made else []
    shutil.rmtree(user.home, ignore_errors=True)
    if user.home.exists():
        left.append(str(user.home))
    if user.made:
        left += remove_user(user.name)
    return left


def remove_user(name: str) -> list[str]:
    """``userdel`` (the user, its group and its subordinate ranges); what is still there after it."""
    said = ""
    for _ in range(USERDEL_TRIES):  # another useradd/userdel may hold /etc/passwd's lock a moment (exit 10)
        with users_lock():
            done = subprocess.run(["userdel", name], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
        said = (done.stderr or done.stdout).strip()
        if done.returncode in (0, 6):  # 6: no such user
            break
        time.sleep(0.2)
    left = []
    try:
        pwd.getpwnam(name)
        left.append(f"user {name} (userdel: {said})")
    except KeyError:
        pass
    left += [f"{path} entry of {name}" for path in ("/etc/subuid", "/etc/subgid") if _ranges_of(name, -1, path)]
    return left


def kill_processes(uid: int) -> list[int]:
    """SIGKILL every process whose real uid is ``uid`` (a user made for this run owns only what the
    run started), and wait until they are gone; returns their pids."""
    killed = []
    for pid in _pids_of(uid):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    while killed and time.monotonic() < deadline and _pids_of(uid):
        time.sleep(0.01)
    return killed


def sweep_dead() -> list[str]:
    """Remove the users made here whose maker process is gone, with their processes, delegated
    cgroups and homes; returns what was removed.  Users of live runs and the machine's own are
    left alone (their comment does not say so, or their maker still runs)."""
    removed = []
    for entry in pwd.getpwall():
        found = _COMMENT_RE.match(entry.pw_gecos)
        if not entry.pw_name.startswith(NAME_PREFIX) or found is None:
            continue
        pid, start = int(found.group(1)), int(found.group(2))
        if _start_ticks(pid) == start:
            continue  # its maker still runs
        kill_processes(entry.pw_uid)
        cgroupfs.remove_leftovers(f"/{entry.pw_name}")  # a delegated subtree (rootless_cgroup.py)
        if entry.pw_dir.startswith(HOME_BASE):
            shutil.rmtree(entry.pw_dir, ignore_errors=True)
        remove_user(entry.pw_name)
        removed.append(f"user {entry.pw_name}")
    return removed


# -- helpers ---------------------------------------------------------------------------
def _user(entry: pwd.struct_passwd, home: Path, made: bool) -> RootlessUser:
    subuids = _ranges_of(entry.pw_name, entry.pw_uid, "/etc/subuid")
    subgids = _ranges_of(entry.pw_name, entry.pw_uid, "/etc/subgid")
    return RootlessUser(entry.pw_name, entry.pw_uid, entry.pw_gid, home,
                        subuids[0] if subuids else None, subgids[0] if subgids else None, made)


def _ranges_of(name: str, uid: int, path: str) -> list[IdRange]:
    """The user's ranges in ``/etc/subuid`` or ``/etc/subgid`` (an entry names it or its uid)."""
    return [r for owner, r in _entries(path) if owner in (name, str(uid))]


def _add_ranges(name: str) -> None:
    """One free range of 65536 ids in each file, above every range the machine has."""
    ranges = [r for path in ("/etc/subuid", "/etc/subgid") for r in _all_ranges(path)]
    start = max([100000] + [r.start + r.count for r in ranges])
    start += -start % 65536
    span = f"{start}-{start + 65535}"
    _tool(["usermod", "--add-subuids", span, "--add-subgids", span, name],
          f"cannot give {name} the subordinate ids {span}")


def _all_ranges(path: str) -> list[IdRange]:
    return [r for _, r in _entries(path)]


def _entries(path: str) -> list[tuple[str, IdRange]]:
    """(owner, range) of each well-formed ``owner:start:count`` line of a subordinate id file."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            out.append((parts[0], IdRange(int(parts[1]), int(parts[2]))))
    return out


@contextlib.contextmanager
def users_lock() -> Iterator[None]:
    """This machine's user database to ourselves while one tool changes it (see USERS_LOCK)."""
    fd = os.open(USERS_LOCK, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _tool(argv: list[str], what: str) -> None:
    try:
        with users_lock():
            done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    except FileNotFoundError:
        raise UserSetupError(f"{what}: {argv[0]} is not installed (Debian's passwd package)") from None
    except subprocess.TimeoutExpired:
        raise UserSetupError(f"{what}: {argv[0]} gave no answer in {TOOL_TIMEOUT_S:.0f}s") from None
    if done.returncode != 0:
        raise UserSetupError(f"{what}: {' '.join(argv[:1])} exited {done.returncode}: "
                             f"{(done.stderr or done.stdout).strip()}")


def _start_ticks(pid: int) -> int:
    """When ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22); -1 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rpartition(")")[2].split()[19])


def _pids_of(uid: int) -> list[int]:
    """Live processes whose real uid is ``uid`` (a zombie is dead already: its parent reaps it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = dict(line.split(":", 1) for line in Path(f"/proc/{entry}/status").read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        if int(status.get("Uid", "-1").split()[0]) == uid and not status.get("State", "").strip().startswith("Z"):
            pids.append(int(entry))
    return pids
