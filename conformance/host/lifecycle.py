"""One container's life through a driver: create → start → release → wait → kill on timeout → delete.

The one place that sequence is written.  ``running`` drives it whole and
stops at the points where the harness looks: ``at("created")`` after create,
the ``with`` body while the entrypoint runs, ``at("exited")`` after it ended
and ``at("deleted")`` after delete (observe.py reads host facts there; the
``container_host`` fixture hands a testinfra Host out of the body).  Lifecycle
scenarios (steps.py) call the same ``Container`` verbs one by one inside
``held``.

The container's stdin is a pipe the harness holds: an entrypoint that must
stay alive for the probes ends with ``read _`` (or is ``cat``), and
``release`` lets it go.  Whatever happens — a timeout, a failed verb, an
exception in a probe or a test, Ctrl-C — the container is force-deleted and
its init reaped before the ``with`` is left.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import IO, Callable, Iterator, Optional

from conformance.model.errors import DriverError

from . import writers
from .drivers import RuntimeDriver
from .drivers.base import NO_LAUNCH, Launch
from .drivers.procs import poll_until

#: after a kill (the timeout) or a forced delete: how long the init gets to be reaped
STOP_WAIT_S = 5.0

#: how long start waits for the init to exec the entrypoint (past it, the steps judge what they see)
ENTRYPOINT_WAIT_S = 10.0
#: how long the cleanup waits for a live container its kill ended, before it leaves it to the delete
KILL_WAIT_S = 0.5

#: the points of ``running`` where ``at`` is called (the ``with`` body is "running")
STAGES = ("created", "exited", "deleted")


def exe_link(pid: int) -> str | None:
    """What ``/proc/<pid>/exe`` names (the program the process runs now); None once it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def wait_exec(pid: int, before: str | None, timeout: float) -> bool:
    """Wait until the init has exec'd the entrypoint: its ``/proc/<pid>/exe`` no longer names
    ``before``, the runtime's own program (True); False if it ended first or ``timeout`` passed.
    Polled as the drivers poll a pid file (procs.poll_until: tight where a CPU is spare), since the
    exec usually follows start, or the pid file, by a moment."""
    outcome: list[bool] = []

    def decided() -> bool:
        now = exe_link(pid)
        if now is None or now != before:
            outcome.append(now is not None)
        return bool(outcome)

    return poll_until(decided, time.monotonic() + timeout) and outcome[0]


class Container:
    """One container id on one driver, with the pipe that is its stdin; the verbs in their order."""

    def __init__(self, driver: RuntimeDriver, bundle: Path, cid: str, stdout: IO[bytes], stderr: IO[bytes],
                 timeout: float, launch: Launch = NO_LAUNCH) -> None:
        self.driver, self.bundle, self.cid = driver, bundle, cid
        self.stdout, self.stderr, self.timeout = stdout, stderr, timeout
        self.launch = launch  # what the runtime's create is started with (descriptors, --preserve-fds)
        self.pid: int | None = None          # the init's host pid, once created
        self.exit: int | None = None         # the entrypoint's exit status, once waited for
        self.timed_out = False
        self._waited = False
        self._deleted = False
        self._stdin_r, self._stdin_w = os.pipe()
        self.created_exe: str | None = None  # what the init ran when created (the runtime's code): exe_link

    def create(self) -> int:
        """Create the container; DriverError when the runtime cannot (a step may expect that)."""
        self.pid = self.driver.create(self.bundle, self.cid, self._stdin_r, self.stdout, self.stderr, self.timeout,
                                      self.launch)
        # the created init still runs the runtime's code (runc init, crun, runtime-ref's Python), waiting for start
        self.created_exe = exe_link(self.pid)
        return self.pid

    def start(self) -> None:
        """Start the container, and return once its init runs the entrypoint's program.

        ``start`` may return while the init is still in the runtime's code on
        its way to exec (runtime-ref's is Python: under load that takes a
        while); what the harness observes of a running container from then
        on (its /proc from the host, an exec compared with it) must be the
        entrypoint's.  Not waited for in a sandbox (the state's pid is the
        sandbox's, which never execs the entrypoint) or before the sandbox
        probe said which kind the runtime is.
        """
        self.driver.start(self.cid)
        if self.pid is None or self.created_exe is None or self.driver.sandbox is None or self.driver.sandboxed:
            return
        wait_exec(self.pid, self.created_exe, min(self.timeout, ENTRYPOINT_WAIT_S))

    def release(self) -> None:
        """Let an entrypoint waiting in ``read _`` go: one line, then end of input (``cat`` ends too);
        on its terminal when it has one (the stdin pipe does not reach it then)."""
        if self.launch.console is not None:
            self.launch.console.release()
        if self._stdin_w < 0:
            return
        try:
            os.write(self._stdin_w, b"\n")
        except OSError:  # the container already exited and closed its end
            pass
        self._close_stdin()

    def may_write(self, path: Path) -> bool:
        """Whether a process may still add to ``path`` (the container's stdout): not when every
        holder waits on this stdin, still unreleased (writers.py).  Output the harness copies
        itself (a terminal's, an engine's FIFOs) that look cannot tell from a waiting one: there,
        always."""
        if self.launch.console is not None or not getattr(self.driver, "writes_output_itself", False):
            return True
        return writers.may_grow(path, os.fstat(self._stdin_w).st_ino if self._stdin_w >= 0 else None)

    def wait(self) -> int | None:
        """Wait up to the timeout for the entrypoint's exit; past it, kill the container.

        Sets ``exit`` (None when it timed out or the lane cannot tell) and ``timed_out``.
        """
        self.exit, self.timed_out = self.driver.wait(self.cid, self.timeout)
        self._waited = True
        if self.timed_out:  # through the runtime, as a caller would: what the next steps see is its doing
            try:
                self.driver.kill(self.cid, "KILL")
            except DriverError:
                pass
            self.driver.wait(self.cid, STOP_WAIT_S)
        return self.exit

    def delete(self) -> None:
        """Force-delete (poststop hooks run here); quiet when already gone."""
        self.driver.delete(self.cid, force=True)
        self._deleted = True

    def close(self) -> None:
        """The guarantee on every path: stdin closed, the container deleted, its init reaped."""
        self._close_stdin()
        if self._stdin_r >= 0:
            os.close(self._stdin_r)
            self._stdin_r = -1
        try:
            if not self._deleted:
                self._stop()
                self.delete()
        finally:
            if self.pid is not None and not self._waited:
                self.driver.wait(self.cid, STOP_WAIT_S)  # killed by the delete: reap, record nothing
                self._waited = True

    def _stop(self) -> None:
        """End a live container before the cleanup's delete: SIGKILLed (``driver.stop``), then reaped
        at once by the harness, its subreaper.  runc 1.1's ``delete --force`` of a live container signals it and
        then sleeps 100 ms before it looks again (delete.go, killContainer), a sleep it never takes
        for a stopped one.  A container whose kill does not end it soon is left to the delete."""
        if self.pid is None or self._waited:
            return
        self.driver.stop(self.cid)
        _, timed_out = self.driver.wait(self.cid, KILL_WAIT_S)
        self._waited = not timed_out

    def _close_stdin(self) -> None:
        if self._stdin_w >= 0:
            os.close(self._stdin_w)
            self._stdin_w = -1


Stage = Callable[[str, Container], None]


@contextlib.contextmanager
def held(driver: RuntimeDriver, bundle: Path, cid: str, stdout: IO[bytes], stderr: IO[bytes],
         timeout: float, launch: Launch = NO_LAUNCH) -> Iterator[Container]:
    """A container not yet created, whose verbs the caller drives; closed (deleted) on leaving."""
    container = Container(driver, bundle, cid, stdout, stderr, timeout, launch)
    try:
        yield container
    finally:
        container.close()


@contextlib.contextmanager
def running(driver: RuntimeDriver, bundle: Path, cid: str, stdout: IO[bytes], stderr: IO[bytes],
            timeout: float, at: Optional[Stage] = None, launch: Launch = NO_LAUNCH) -> Iterator[Container]:
    """The whole life: create, ``at("created")``, start, the body (running), then release, wait
    (kill on timeout), ``at("exited")``, delete, ``at("deleted")``.

    ``exit`` and ``timed_out`` are set on the container when the ``with`` is
    left normally.  If the body or a stage raises, the container is not
    waited for: it is force-deleted at once and the exception goes on.
    """
    at = at or _nowhere
    with held(driver, bundle, cid, stdout, stderr, timeout, launch) as container:
        container.create()
        at("created", container)
        container.start()
        yield container
        container.release()
        container.wait()
        at("exited", container)
        container.delete()
        at("deleted", container)


def _nowhere(stage: str, container: Container) -> None:
    """No probes."""
