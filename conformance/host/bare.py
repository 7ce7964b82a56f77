"""The yardstick the benchmarks hold the harness to: one bare ``RUNTIME run`` per scenario.

For each scenario the very bundle the harness would build on this host
(same config.json, rootfs, host setup, global flags and adaptations) is run
once with ``RUNTIME run`` and timed around the runtime process alone; stdin
is an empty pipe, so an entrypoint's ``read _`` ends at once.  bench/ calls
this where pytest runs and, through the agent (op ``bare``), on any other
host, so "harness time per scenario / bare time per scenario" compares like
with like on each host.  Nothing here is judged.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from conformance.model.scenario import Scenario

from . import cgroupfs, host_setup, hostinfo, hoststate
from .bundle import build
from .drivers.procs import empty_stdin, poll_until
from .session import RunSession


def timed_run(argv: list[str], stdout: int, stderr: int, timeout: float) -> float:
    """Wall time of one runtime process, watched as the harness watches its own (procs.poll_until).

    Not a blocking wait on purpose: on a virtual machine, and far more under
    emulation, how the waiter waits changes how fast the runtime runs (idle
    virtual CPUs wake slowly); the yardstick waits like the harness it measures.
    """
    stdin = empty_stdin()
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True)
    finally:
        os.close(stdin)
    exited = poll_until(lambda: proc.poll() is not None, time.monotonic() + timeout)
    elapsed = time.perf_counter() - started
    if not exited:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return elapsed


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
            variables["host_hostname"] = socket.gethostname()  # what the executor gives a bundle, too
            variables.update(hoststate.namespace_links())
            variables.update(hoststate.before(((f.kind, f.target) for f in scenario.host_facts), variables,
                                              profile.path))
            bundle = build(scenario, cid, session.workdir, profile.spec_version, variables)
            try:
                with open(bundle.path / "stdout", "wb") as out, open(bundle.path / "stderr", "wb") as err:
                    times.append(timed_run(profile.argv(root, "run", "--bundle", str(bundle.path), cid),
                                           out.fileno(), err.fileno(), scenario.timeout))
                subprocess.run(profile.argv(root, "delete", "--force", cid), capture_output=True, timeout=30)
                if bundle.config["linux"].get("cgroupsPath"):  # a patch may leave the path to the runtime
                    cgroupfs.remove_leftovers(bundle.config["linux"]["cgroupsPath"])
            finally:
                bundle.remove()
    return times
