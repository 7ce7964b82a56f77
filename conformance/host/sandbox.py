"""Does a runtime run its containers in a sandbox?  Asked of the runtime itself, once per host.

A namespaces-and-cgroups runtime (runc, crun, ref) names the container's
init in ``state``: once ``start`` returned, that process has exec'd the
entrypoint, so ``/proc/<pid>`` on the host *is* the container's process and
host-side facts (its namespaces, ``status``, uid maps) describe the
container.  A sandboxed runtime names a process of its own — gVisor's
user-space kernel, a VM's monitor — which never runs the entrypoint: the
host-side facts then describe the sandbox, and the judge reads them for what
they can mean (judge/verdict.py).

The probe tells the two apart without knowing any runtime by name: one
busybox container whose entrypoint is ``/bin/busybox cat`` (it waits on the
stdin pipe the harness holds), created and started like every scenario's;
then ``/proc/<state pid>/exe`` is compared with the rootfs's
``/bin/busybox`` by device and inode, allowing a moment for the exec.  A
probe that cannot tell (the runtime could not create the container) says so
and counts as *not* sandboxed: the strict reading, where every host fact is
judged as a fact about the container.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from conformance.model.errors import ConformanceError
from conformance.model.records import SandboxProbe
from conformance.model.scenario import Expectations, Scenario

from . import cgroupfs, lifecycle
from .bundle import build
from .drivers import RuntimeDriver, procs

#: the probe's entrypoint: a regular file of the rootfs, so the comparison needs no symlink resolution
ENTRYPOINT = "/bin/busybox"
#: how long the state pid gets, after start returned, to be seen running the entrypoint
EXEC_WAIT_S = 2.0
#: the longest a probe may take (a scenario with a shorter timeout gives the probe no more than its own)
PROBE_TIMEOUT_S = 20.0


def _probe_scenario() -> Scenario:
    return Scenario(id="sandbox-probe", title="is the state pid the entrypoint?", tags=(), controls=(),
                    args=(ENTRYPOINT, "cat"), expect=Expectations(), path=Path("<sandbox probe>"), line=0)


def _same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _runs(pid: int, entrypoint: os.stat_result, wait_s: float) -> tuple[bool, str]:
    """(the process runs the entrypoint, what its /proc/<pid>/exe is), waiting up to ``wait_s`` for the exec."""
    started = time.monotonic()
    deadline = started + wait_s
    while True:
        try:
            if _same_file(os.stat(f"/proc/{pid}/exe"), entrypoint):
                return True, ENTRYPOINT
        except FileNotFoundError:
            return False, "no process of this host"
        except OSError as exc:  # unreadable: a process we may not look into is not the entrypoint we made
            return False, f"an unreadable /proc/{pid}/exe ({exc.strerror})"
        if time.monotonic() >= deadline:
            try:
                return False, os.readlink(f"/proc/{pid}/exe")
            except OSError as exc:
                return False, f"an unreadable /proc/{pid}/exe ({exc.strerror})"
        time.sleep(0.0005 if time.monotonic() - started < procs.SPIN_S else 0.005)  # tight at first, as poll_until


def probe(driver: RuntimeDriver, workdir: Path, cid: str, timeout: float = PROBE_TIMEOUT_S) -> SandboxProbe:
    """Run the probe container once on ``driver`` and say whether its state pid is the entrypoint."""
    try:
        pid, runs, exe, init_exe = _run_probe(driver, workdir, cid, min(timeout, PROBE_TIMEOUT_S))
    except (ConformanceError, OSError, KeyError, ValueError) as exc:
        return SandboxProbe(False, f"not determined (the probe container did not run: {_one_line(exc)}); "
                                   "host facts are judged as the container's", ran=False)
    if runs:
        return SandboxProbe(False, f"state pid {pid} runs the entrypoint {ENTRYPOINT}", init_exe)
    return SandboxProbe(True, f"state pid {pid} runs {exe}, not the entrypoint {ENTRYPOINT}", init_exe)


def _run_probe(driver: RuntimeDriver, workdir: Path, cid: str, timeout: float) -> tuple[int, bool, str, str]:
    """(the state pid, whether it runs the entrypoint, its exe, its exe when only created) of one probe
    container, removed after."""
    bundle = build(_probe_scenario(), cid, workdir, driver.spec_version, {}, driver.bundle_needs)
    created: list[str] = []

    def at(stage: str, container: lifecycle.Container) -> None:
        if stage == "created" and container.pid is not None:
            try:
                created.append(os.readlink(f"/proc/{container.pid}/exe"))
            except OSError:
                pass

    try:
        with open(bundle.path / "stdout", "wb") as out, open(bundle.path / "stderr", "wb") as err, \
                lifecycle.running(driver, bundle.path, cid, out, err, timeout, at=at):
            pid = int(driver.state(cid)["pid"])
            runs, exe = _runs(pid, os.stat(bundle.rootfs / ENTRYPOINT.lstrip("/")), EXEC_WAIT_S)
    finally:
        cgroupfs.remove_leftovers(bundle.config["linux"].get("cgroupsPath", ""))
        bundle.remove()
    return pid, runs, exe, created[0] if created else ""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:300] + "…"
