"""The yardstick the benchmarks hold the harness to: one bare ``RUNTIME run`` per scenario.

For each scenario the very bundle the harness would build on this host
(same config.json, rootfs, host setup, global flags and adaptations) is run
once with ``RUNTIME run`` and timed around the runtime process alone; stdin
is an empty pipe, so an entrypoint's ``read _`` ends at once.  A process
with ``terminal: true`` gets a pseudo-terminal of its own as the runtime's
controlling terminal (a foreground ``run`` relays the container's terminal on
its own: without one, runc refuses at once, "open /dev/tty", and the yardstick
would time a refusal), with one line and end of input typed in advance.
(runtime-ref's foreground ``run`` relays no terminal, and still refuses:
for it such a scenario's yardstick stays that refusal.)  bench/ calls
this where pytest runs and, through the agent (op ``bare``), on any other
host, so "harness time per scenario / bare time per scenario" compares like
with like on each host.  Nothing here is judged.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import signal
import struct
import subprocess
import termios
import time
from typing import Any, Iterator

from conformance.model.scenario import Scenario

from . import cgroupfs, host_setup, hostinfo, hoststate
from .bundle import build
from .drivers.procs import empty_stdin, poll_until
from .session import RunSession


def timed_run(argv: list[str], stdout: int, stderr: int, timeout: float,
              terminal: tuple[int, int] | None = None) -> float:
    """Wall time of one runtime process, watched as the harness watches its own (procs.poll_until).

    Not a blocking wait on purpose: on a virtual machine, and far more under
    emulation, how the waiter waits changes how fast the runtime runs (idle
    virtual CPUs wake slowly); the yardstick waits like the harness it measures.
    ``terminal``: the runtime's stdio is a pseudo-terminal of that size (rows, columns) that is its
    controlling terminal (a foreground ``run`` gives the container's terminal the size of its own).
    """
    with _stdio(stdout, stderr, terminal) as (stdin, out, err, master):
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=err, start_new_session=True,
                                preexec_fn=_take_terminal if terminal is not None else None)
        for fd in {stdin, out, err}:
            os.close(fd)
        exited = poll_until(lambda: _copied(master, stdout) or proc.poll() is not None, time.monotonic() + timeout,
                            idle_work=False)
        elapsed = time.perf_counter() - started
        _copied(master, stdout)  # what is left in the pty
    if not exited:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return elapsed


@contextlib.contextmanager
def _stdio(stdout: int, stderr: int, terminal: tuple[int, int] | None) -> Iterator[tuple[int, int, int, int | None]]:
    """(stdin, stdout, stderr, the terminal's master or None), each a descriptor the caller closes once
    the runtime has started (the master is closed here): an empty pipe and the two files, or a
    pseudo-terminal's slave three times, with an empty line and end of input (^D) typed already."""
    if terminal is None:
        yield empty_stdin(), os.dup(stdout), os.dup(stderr), None
        return
    master, slave = pty.openpty()
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", *terminal, 0, 0))
    os.write(master, b"\n\x04")  # a `read _` returns, `cat` ends
    os.set_blocking(master, False)
    try:
        yield slave, os.dup(slave), os.dup(slave), master
    finally:
        os.close(master)


def _terminal(config: dict[str, Any]) -> tuple[int, int] | None:
    """The (rows, columns) of the terminal a config's process gets (consoleSize, else 24x80), or None."""
    process = config.get("process") or {}
    if process.get("terminal") is not True:
        return None
    size = process.get("consoleSize") or {}
    return int(size.get("height", 24)), int(size.get("width", 80))


def _take_terminal() -> None:
    """In the runtime's process, after setsid: its stdin, the pty's slave, becomes its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _copied(master: int | None, stdout: int) -> bool:
    """Copy what the terminal's process wrote to ``stdout``, so it never blocks on a full pty (never
    done: False)."""
    if master is not None:
        with contextlib.suppress(OSError):  # EAGAIN: nothing yet; EIO: the slave side is closed
            os.write(stdout, os.read(master, 65536))
    return False


def bare_runs(scenarios: list[Scenario], runtime: str, session: RunSession) -> list[float | None]:
    """Seconds of one ``RUNTIME run`` of each scenario's bundle (None: the host lacks what it requires)."""
    profile = session.profile(runtime)
    root = session.driver(runtime).root
    times: list[float | None] = []
    for scenario in scenarios:
        if hostinfo.unmet(scenario.requires):
            times.append(None)
            continue
        cid = session.new_container_id()
        with host_setup.prepared(scenario.host_setup, session.workdir) as variables:
            variables.update(hoststate.own_variables())  # what the executor gives a bundle, too
            variables.update(hoststate.before(((f.kind, f.target) for f in scenario.host_facts), variables,
                                              profile.path))
            bundle = build(scenario, cid, session.workdir, profile.spec_version, variables)
            try:
                with open(bundle.path / "stdout", "wb") as out, open(bundle.path / "stderr", "wb") as err:
                    times.append(timed_run(profile.argv(root, "run", "--bundle", str(bundle.path), cid),
                                           out.fileno(), err.fileno(), scenario.timeout, _terminal(bundle.config)))
                subprocess.run(profile.argv(root, "delete", "--force", cid), capture_output=True, timeout=30)
                if bundle.config["linux"].get("cgroupsPath"):  # a patch may leave the path to the runtime
                    cgroupfs.remove_leftovers(bundle.config["linux"]["cgroupsPath"])
            finally:
                bundle.remove()
    return times
