"""Processes the harness adopted: the child-subreaper role, pidfd waits, reaping.

A runtime's ``create`` exits and leaves the container's init behind; a
*child subreaper* (``PR_SET_CHILD_SUBREAPER``) gets it re-parented to itself,
so ``waitpid`` tells how the init ended, exactly as a container engine's shim
learns it.  These helpers are the bare lane's (``cli.py``): a lane whose
engine reports exits itself (containerd) needs none of them.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import select
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Sequence

from .. import idle
from ..proctable import process_state

PR_SET_CHILD_SUBREAPER = 36
#: how long a wait polls before it blocks: measured on this project's VM, a runtime process that
#: a blocked waiter waits for ends ~5-10 ms later than one a short poll watches (idle virtual CPUs
#: wake slowly); past this a wait blocks, so a slow runtime (under emulation) costs no CPU.
#: Only worth it where a CPU would otherwise idle: ``set_spin(0)`` where the harness's own
#: processes keep every CPU busy (as many xdist workers as CPUs), and the poll would take its
#: time from the runtimes it waits for.
SPIN_S = 0.1


def set_spin(seconds: float) -> None:
    """How long waits poll before they block, for this process (see SPIN_S)."""
    global SPIN_S
    SPIN_S = seconds


#: while a wait for an init lasts, how often the other zombies the harness adopted are reaped
REAP_EVERY_S = 0.2


def empty_stdin() -> int:
    """The read end of a pipe already at its end: what a runtime process gets as stdin.

    Never the host's /dev/null: gVisor's runsc fchowns the stdio it is handed to
    its sandbox's user (nobody, or the container's mapped root), so a /dev/null
    given as stdin changes the ownership of this machine's own /dev/null for as
    long as the sandbox runs.  The caller closes the descriptor once the process
    has started.
    """
    read_end, write_end = os.pipe()
    os.close(write_end)
    return read_end


def run_verb(argv: Sequence[str], timeout: float, output: IO[bytes] | None = None,
             meanwhile: Callable[[int], object] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a runtime verb to its end, in a session of its own, with an empty pipe as stdin:
    its stdout and stderr captured (text), or both written to ``output``.

    What ``subprocess.run(..., timeout=)`` does, but the end is awaited on the
    process's pidfd (block_until_exit): subprocess's own wait with a timeout
    polls at 1, 2, 4 … 50 ms, and a verb that closes its output a moment before
    it exits cost ~1.2 ms on average there — over a thousand verbs in a matrix.
    ``meanwhile`` is called with the verb's pid every few milliseconds while it
    runs (the bare lane reaps the zombies of helpers it adopted, all but that
    one, which is left to Popen: see CliDriver._call_reaping).
    On timeout the verb's process group is killed and subprocess.TimeoutExpired raised.
    """
    stdin = empty_stdin()
    try:
        proc = subprocess.Popen(argv, stdin=stdin, start_new_session=True,
                                stdout=subprocess.PIPE if output is None else output,
                                stderr=subprocess.PIPE if output is None else subprocess.STDOUT)
    finally:
        os.close(stdin)
    deadline = time.monotonic() + timeout
    with proc:
        try:
            out, err = _read_to_end(proc, deadline, meanwhile)
            while (exited := block_until_exit(proc.pid, _pace(deadline, meanwhile))) is False:
                if time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(list(argv), timeout)
                if meanwhile is not None:
                    meanwhile(proc.pid)
            proc.wait(None if exited else max(deadline - time.monotonic(), 0))  # None: no pidfd here
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise subprocess.TimeoutExpired(list(argv), timeout) from None
    return subprocess.CompletedProcess(list(argv), proc.returncode, _text(out), _text(err))


def _pace(deadline: float, meanwhile: Callable[[int], object] | None) -> float:
    """How long one wait may block: until the deadline, or a few ms when something is to be done meanwhile."""
    left = max(deadline - time.monotonic(), 0.0)
    return min(left, 0.005) if meanwhile is not None else left


def _read_to_end(proc: subprocess.Popen[bytes], deadline: float,
                 meanwhile: Callable[[int], object] | None) -> tuple[bytes, bytes]:
    """Everything the verb writes to its stdout and stderr pipes (none: b"", b""), until both end."""
    chunks: dict[int, list[bytes]] = {}
    with selectors.DefaultSelector() as sel:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                sel.register(stream.fileno(), selectors.EVENT_READ)
                chunks[stream.fileno()] = []
        while sel.get_map():
            if time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(proc.args, 0)
            for key, _ in sel.select(_pace(deadline, meanwhile)):
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    sel.unregister(key.fd)
            if meanwhile is not None:
                meanwhile(proc.pid)
    out = b"".join(chunks.get(proc.stdout.fileno(), [])) if proc.stdout is not None else b""
    err = b"".join(chunks.get(proc.stderr.fileno(), [])) if proc.stderr is not None else b""
    return out, err


def _text(data: bytes) -> str:
    """As subprocess's text mode reads it (universal newlines)."""
    return data.decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


#: where handed-over descriptors wait before they are moved to 3, 4, …: above any of ours
_PARKED_FROM = 200

#: moves the parked descriptors into place, then execs the runtime (argv[1:])
_TRAMPOLINE = ("import os, sys\n"
               "parked = [int(fd) for fd in os.environ.pop('OCI_CONFORMANCE_FDS').split(',')]\n"
               "for i, fd in enumerate(parked):\n"
               "    os.dup2(fd, 3 + i, inheritable=True)\n"
               "for fd in parked:\n"
               "    os.close(fd)\n"
               "os.execvp(sys.argv[1], sys.argv[1:])\n")


def with_fds_at_3(argv: list[str], fds: Sequence[int], env: Mapping[str, str] | None = None,
                  ) -> tuple[list[str], list[int], dict[str, str]]:
    """(argv, pass_fds, env) that start ``argv`` with ``fds`` open at 3, 4, … in their order, and no other.

    subprocess keeps a passed descriptor at its own number; a caller of a
    runtime (systemd's socket activation, an engine's --preserve-fds) hands it
    over at 3 and up.  Each is duplicated to a high number first (so that no
    source is overwritten by another's target), then a Python trampoline (a
    POSIX shell cannot name descriptors above 9) moves them into place and
    execs ``argv``: the runtime starts with exactly 0-2 and these, and ``env``
    (default: ours).  The caller closes the returned descriptors once the
    process has started.
    """
    parked = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _PARKED_FROM) for fd in fds]
    env = {**(os.environ if env is None else env), "OCI_CONFORMANCE_FDS": ",".join(map(str, parked))}
    return [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, *argv], parked, env


def become_subreaper() -> bool:
    """Adopt orphaned descendants (the containers' inits); False if the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def exit_status(returncode: int) -> int:
    """A process killed by a signal reports -N through subprocess; the shell convention is 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def wait_exit(pid: int, timeout: float) -> tuple[int | None, bool]:
    """Wait for a container init we adopted; (exit status as 128+N for signals, timed_out).

    If the init is not our child (the runtime kept it elsewhere), poll until it
    is gone and report the status as unknown (None).

    Meanwhile the other zombies we adopted are reaped, every REAP_EVERY_S: an
    init that ends its PID namespace cannot exit until every process of it is
    reaped, and one the runtime forked and left behind (crun 1.8's child of a
    failed ``exec --detach``) is ours to reap, as subreaper.  Unreaped, it held
    the init, and the wait ran into its timeout (20 s) now and then.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    exited = block_until_exit(pid, min(timeout, REAP_EVERY_S))
    while exited is False and time.monotonic() < deadline:
        reap_adopted(exclude=pid)
        exited = block_until_exit(pid, min(REAP_EVERY_S, max(deadline - time.monotonic(), 0.0)), spin=False)
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return _poll_gone(pid, deadline)
        if done:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status), False
        if time.monotonic() > deadline:
            return None, True
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _poll_gone(pid: int, deadline: float) -> tuple[int | None, bool]:
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return None, True
        time.sleep(0.01)
    return None, False


def block_until_exit(pid: int, timeout: float, spin: bool = True) -> bool | None:
    """Sleep until ``pid`` has exited (True) or ``timeout`` passed (False), on a pidfd.

    Popen.wait(timeout) and a waitpid loop both poll, with sleeps growing to
    20-50 ms: on a 100 ms container that was a quarter of the harness's own
    time.  A pidfd becomes readable the moment the process exits.  None when
    the kernel or Python has no pidfd_open (callers then poll as before).
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        return None
    started = time.monotonic()
    try:
        while spin and time.monotonic() - started < min(SPIN_S, timeout):  # see wait_for_file: a short poll first
            if select.select([fd], [], [], 0)[0]:
                return True
            if not idle.step():  # queued clean-up (host/idle.py) instead of a sleep
                time.sleep(0.0005)
        return bool(select.select([fd], [], [], max(timeout - (time.monotonic() - started), 0))[0])
    finally:
        os.close(fd)


def ended_within(proc: subprocess.Popen[Any], timeout: float) -> bool:
    """Whether ``proc`` ended within ``timeout`` s (then it is reaped): awaited on a pidfd
    (block_until_exit), or, where the kernel has none, by Popen's own wait, which polls."""
    exited = block_until_exit(proc.pid, timeout)
    if exited is False:
        return False
    try:
        proc.wait(None if exited else timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def wait_for_file(path: Path, alive: Callable[[], bool], deadline: float) -> bool:
    """Wait until ``path`` exists with content (True), or ``alive()`` says the writer ended, or
    ``deadline`` (time.monotonic) passed (False).

    Polled, on purpose: measured on this project's VM, a waiter that blocks
    (inotify, a pidfd) let the runtime reach its pid file ~10 ms later than a
    short poll did — idle virtual CPUs wake slowly — so the poll is tight for
    SPIN_S (a runtime on hardware or KVM) and backs off after it (a runtime
    under emulation, where a second is common, should not pay for it).
    """
    name = os.fspath(path)  # polled every 0.5 ms: no Path object per look
    done = poll_until(lambda: _has_content(name) or not alive(), deadline)
    return done and _has_content(name)


def poll_until(ready: Callable[[], bool], deadline: float, idle_work: bool = True) -> bool:
    """Call ``ready()`` until it says True (True) or ``deadline`` (time.monotonic) passed (False):
    every 0.5 ms for SPIN_S, every 2 ms up to a second, every 10 ms after (see wait_for_file).
    ``idle_work``: a piece of queued clean-up (host/idle.py) instead of a sleep; the benchmarks'
    yardstick (bare.timed_run) waits without, so that no harness work is timed as the runtime's."""
    started = time.monotonic()
    while True:
        if ready():
            return True
        now = time.monotonic()
        if now >= deadline:
            return False
        if not (idle_work and idle.step()):
            time.sleep(0.0005 if now - started < SPIN_S else 0.002 if now - started < 1.0 else 0.01)


def _has_content(path: str) -> bool:
    try:
        return os.stat(path).st_size > 0
    except FileNotFoundError:
        return False


def _children() -> list[int]:
    """Our child pids, zombies included (/proc/<pid>/task/<tid>/children)."""
    me = os.getpid()
    pids: list[int] = []
    for task in os.listdir(f"/proc/{me}/task"):
        try:
            pids += [int(p) for p in Path(f"/proc/{me}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return pids


def reap_adopted(exclude: int = -1) -> list[int]:
    """Reap every zombie child but ``exclude``: orphans we adopted as subreaper.

    Only zombies are touched, and only while no Popen of ours is waiting for
    its own child (the driver calls this between runtime calls), so nobody's
    exit status is stolen.
    """
    reaped = []
    for pid in _children():
        if pid != exclude and process_state(pid) == "Z":
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    reaped.append(pid)
            except ChildProcessError:
                pass
    return reaped
