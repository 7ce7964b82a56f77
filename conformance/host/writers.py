"""Can anything still write to a container's output file?  Asked while a step waits for a line.

A ``stdout`` step waits a moment for the entrypoint to print what it
expects (steps.py).  When the line is not there, that wait is only worth
making while some process could still add to the file.  Nothing can when
every process that holds the file open for writing — other than the harness,
which only waits — is blocked reading the container's stdin pipe, which
only the harness writes to: a ``read _`` that has printed all it will print
before its release.  Nor when no process holds it at all (the container was
never created, was removed, or ended).

The answer is read from ``/proc``: each holder's descriptors, and for each
of its threads the system call it sleeps in (``/proc/<pid>/task/<tid>/syscall``):
a ``read`` of a descriptor that is the stdin pipe, or a ``poll``/``ppoll``
without a timeout whose every descriptor is that pipe (busybox's ``read``
polls first; its ``pollfd`` array is read from ``/proc/<pid>/mem``), seen the
same before and after, with no context switch between.  Anything else — a
running or stopped thread, a timed sleep, another descriptor, an
architecture whose system call numbers are not listed here, a terminal's
copy thread in the harness — counts as a possible writer, and the step
waits as before.  What this cannot see is a signal sent from elsewhere
(``kill`` from another host process) waking a reader that then prints: no
scenario's entrypoint waits for one.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

#: per machine: (read, poll, ppoll) system call numbers; poll does not exist on aarch64
SYSCALLS = {"x86_64": (0, 7, 271), "aarch64": (63, -1, 73)}
POLLFD = struct.Struct("=ihh")  # struct pollfd: int fd; short events; short revents
O_ACCMODE = 0o3


def may_grow(path: Path, stdin_pipe: int | None) -> bool:
    """Whether a process other than this one may still write to ``path``.

    ``stdin_pipe``: the inode of the container's stdin pipe (the harness holds
    its write end), None when there is none to wait on.
    """
    numbers = SYSCALLS.get(os.uname().machine)
    try:
        target = os.stat(path)
    except OSError:
        return True
    for pid in _holders((target.st_dev, target.st_ino)):
        if numbers is None or stdin_pipe is None or not _waits_on(pid, f"pipe:[{stdin_pipe}]", numbers):
            return True
    return False


def _holders(file_id: tuple[int, int]) -> list[int]:
    """The processes, this one aside, with a descriptor open for writing on the file."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:  # gone, or a kernel thread
            continue
        if any(_writes(entry, fd, file_id) for fd in fds):
            found.append(int(entry))
    return found


def _writes(pid: str, fd: str, file_id: tuple[int, int]) -> bool:
    try:
        st = os.stat(f"/proc/{pid}/fd/{fd}")
        if (st.st_dev, st.st_ino) != file_id:
            return False
        flags = next(line for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines()
                     if line.startswith("flags:"))
    except (OSError, StopIteration):
        return False
    return int(flags.split()[1], 8) & O_ACCMODE != os.O_RDONLY


def _waits_on(pid: int, pipe: str, numbers: tuple[int, int, int]) -> bool:
    """Every thread of ``pid`` sleeps, without a timeout, reading or polling ``pipe`` alone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True  # gone meanwhile: it writes nothing more
    return bool(tids) and all(_thread_waits(pid, tid, pipe, numbers) for tid in tids)


def _thread_waits(pid: int, tid: str, pipe: str, numbers: tuple[int, int, int]) -> bool:
    base = f"/proc/{pid}/task/{tid}"
    try:
        before = (_read(f"{base}/syscall"), _switches(base))
        if _read(f"{base}/stat").rpartition(")")[2].split()[0] != "S":
            return False
        waits = _blocked_on(pid, before[0].split(), pipe, numbers)
        return waits and (_read(f"{base}/syscall"), _switches(base)) == before
    except (OSError, ValueError, IndexError, struct.error):
        return False


def _blocked_on(pid: int, call: list[str], pipe: str, numbers: tuple[int, int, int]) -> bool:
    """Whether the system call ``call`` (/proc's syscall fields) waits on ``pipe`` alone, for ever."""
    read_nr, poll_nr, ppoll_nr = numbers
    nr, args = int(call[0]), [int(a, 16) for a in call[1:7]]
    if nr == read_nr:
        return _fd_is(pid, args[0], pipe)
    if nr == poll_nr and args[2] & 0x80000000 or nr == ppoll_nr and args[2] == 0:  # no timeout (< 0; no timespec)
        return 0 < args[1] <= 16 and all(fd < 0 or _fd_is(pid, fd, pipe) for fd in _pollfds(pid, args[0], args[1]))
    return False


def _pollfds(pid: int, address: int, count: int) -> list[int]:
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        mem.seek(address)
        raw = mem.read(POLLFD.size * count)
    return [POLLFD.unpack_from(raw, i * POLLFD.size)[0] for i in range(count)]


def _fd_is(pid: int, fd: int, link: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}") == link
    except OSError:
        return False


def _switches(base: str) -> str:
    return next(line for line in _read(f"{base}/status").splitlines() if line.startswith("voluntary_ctxt"))


def _read(path: str) -> str:
    with open(path) as handle:
        return handle.read()
