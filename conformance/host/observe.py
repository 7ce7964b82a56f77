"""Run one scenario's container and observe it, from inside and from the host.

Inside: the entrypoint's exit status, stdout and stderr (written to files in
the bundle, so a container that leaves a background child cannot hold a
pipe open).  Host: facts read at the moment the scenario asks — after create,
while the entrypoint runs, or after it exited but before delete — because a
cgroup counter only exists until delete, and a namespace link only while the
process lives.

A scenario with host facts goes through ``lifecycle.running`` (create,
start, wait, delete, with a probe at each stage); a lifecycle scenario drives
the same verbs one by one (steps.py); the others use one ``run``, which is
the runtime's fastest path.  The container's stdin is a pipe the harness
holds: a scenario that must stay alive for a "running" probe ends with
``read _``, and the harness closes the pipe when done.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import IO

from conformance.model.errors import DriverError
from conformance.model.placeholders import fill
from conformance.model.records import FactReading, Observation
from conformance.model.scenario import HostFact, Scenario

from . import cgroupfs, inside, lifecycle
from .bundle import Bundle
from .drivers import RuntimeDriver
from .image import read_layer_file
from .steps import run_steps

EXEC_WAIT_S = 5.0


class _HostProbe:
    """Reads host facts about one container init (pid) at a given stage."""

    def __init__(self, pid: int, variables: dict[str, str]) -> None:
        self.pid = pid
        self.variables = variables
        self._cgroups: tuple[dict[str, Path], dict[str, str]] | None = None

    def cgroups(self) -> tuple[dict[str, Path], dict[str, str]]:
        """(the host's cgroup mounts, the init's cgroup per hierarchy), read once, while it exists."""
        if self._cgroups is None:
            self._cgroups = cgroupfs.mounts(), cgroupfs.process_cgroups(self.pid)
        return self._cgroups

    def read(self, fact: HostFact) -> FactReading:
        try:
            return FactReading(fact, value=self._value(fact))
        except (OSError, LookupError, ValueError) as exc:
            return FactReading(fact, error=f"{type(exc).__name__}: {exc}")

    def _value(self, fact: HostFact) -> str:
        if fact.kind == "namespace_differs":
            inside = os.stat(f"/proc/{self.pid}/ns/{fact.target}").st_ino
            host = os.stat(f"/proc/self/ns/{fact.target}").st_ino
            return f"container {fact.target}:[{inside}] host {fact.target}:[{host}]"
        if fact.kind == "proc":
            text = Path(f"/proc/{self.pid}/{fact.target}").read_text()
            return _field(text, fact.field) if fact.field else text
        if fact.kind == "cgroup":
            mount_map, cgroups = self.cgroups()
            return cgroupfs.read_value(fact.target, cgroups, mount_map)
        if fact.kind == "host_file":
            return Path(fill(fact.target, self.variables)).read_text()
        if fact.kind == "host_hostname_unchanged":
            return socket.gethostname()
        if fact.kind == "layer_file":
            return read_layer_file(fact.target, fact.layer or "", self.variables)
        raise ValueError(f"unknown host fact {fact.kind}")


def _field(text: str, name: str) -> str:
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    raise LookupError(f"no {name!r} line")


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def _wait_exec(pid: int, before: str | None, timeout: float) -> bool:
    """Wait until the init has exec'd the entrypoint (its /proc/<pid>/exe changed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _exe(pid)
        if now is None:
            return False
        if now != before:
            return True
        time.sleep(0.002)
    return False


def _read_outputs(bundle: Bundle, obs: Observation) -> None:
    obs.stdout = (bundle.path / "stdout").read_text(errors="replace")
    obs.stderr = (bundle.path / "stderr").read_text(errors="replace")


def observe(scenario: Scenario, driver: RuntimeDriver, bundle: Bundle, cid: str,
            sandboxed: str | None = None) -> Observation:
    """Run the container once and collect everything the scenario's expectations need.

    ``sandboxed``: the sandbox probe's evidence when the runtime's state pid is not the
    entrypoint (host/sandbox.py); the observation carries it to the judge.
    """
    obs = Observation(sandboxed=sandboxed)
    started = time.monotonic()
    with open(bundle.path / "stdout", "wb") as out, open(bundle.path / "stderr", "wb") as err:
        try:
            if scenario.steps:
                _steps(scenario, driver, bundle, cid, out, err, obs)
            elif _one_run_serves(scenario, driver):
                _attached(scenario, driver, bundle, cid, out, err, obs)
            elif scenario.needs_lifecycle:
                _lifecycle(scenario, driver, bundle, cid, out, err, obs)
            else:
                outcome = driver.run(bundle.path, cid, out, err, scenario.timeout)
                obs.exit, obs.timed_out = outcome.exit, outcome.timed_out
        except DriverError as exc:
            obs.runtime_error = str(exc)
        finally:
            obs.leaks = cgroupfs.remove_leftovers(bundle.config["linux"]["cgroupsPath"])
    _read_outputs(bundle, obs)
    obs.duration_s = time.monotonic() - started
    return obs


def _steps(scenario: Scenario, driver: RuntimeDriver, bundle: Bundle, cid: str,
           out: IO[bytes], err: IO[bytes], obs: Observation) -> None:
    with lifecycle.held(driver, bundle.path, cid, out, err, scenario.timeout) as container:
        obs.steps = run_steps(list(scenario.steps), container, bundle.path / "stdout")
    obs.exit, obs.timed_out = container.exit, container.timed_out


class _StageReader:
    """Reads the scenario's host facts at each stage ``lifecycle.running`` stops at."""

    def __init__(self, scenario: Scenario, variables: dict[str, str], obs: Observation) -> None:
        self.wanted = {stage: [f for f in scenario.host_facts if f.when == stage]
                       for stage in ("created", "running", "exited", "deleted")}
        self.variables, self.obs = variables, obs
        self.probe: _HostProbe | None = None
        self.created_exe: str | None = None

    def at(self, stage: str, container: lifecycle.Container) -> None:
        if stage == "created":
            assert container.pid is not None
            self.probe = _HostProbe(container.pid, self.variables)
            self.probe.cgroups()  # while the init surely exists: an "exited" fact reads them later
            self.created_exe = _exe(container.pid)
        self.read(stage)

    def read(self, stage: str) -> None:
        assert self.probe is not None, "no probe before the container was created"
        self.obs.facts += [self.probe.read(f) for f in self.wanted[stage]]


def _one_run_serves(scenario: Scenario, driver: RuntimeDriver) -> bool:
    """Everything the scenario reads, it reads while the entrypoint runs, or after it ended when the
    runtime's ``run`` can keep the stopped container: one ``run`` serves it (nothing is read before
    start or after delete, and no refused create is told apart from the entrypoint's own exit)."""
    def served(fact: HostFact) -> bool:
        return fact.when == "running" or (fact.when == "exited" and fact.kind in PID_FREE and driver.keeps_after_run)

    return (scenario.needs_lifecycle and not scenario.steps and not scenario.expect.or_refused
            and all(served(f) for f in scenario.host_facts) and bool(_init_exe(driver)))


#: facts that need no process to be read (an entrypoint that ended before its pid was seen does not
#: keep them from being read after the exit); a cgroup fact needs the init's cgroups, read while it lives
PID_FREE = ("host_file", "layer_file")


def _init_exe(driver: RuntimeDriver) -> str:
    """What the runtime's own init reads as /proc/<pid>/exe before it execs the entrypoint (its probe
    learned it); "" when unknown: then only create/start tells the two moments apart."""
    return driver.sandbox.init_exe if driver.sandbox is not None else ""


def _attached(scenario: Scenario, driver: RuntimeDriver, bundle: Bundle, cid: str,
              out: IO[bytes], err: IO[bytes], obs: Observation) -> None:
    """One foreground run: facts and checks read once the init was started and exec'd the entrypoint,
    then its stdin let go."""
    stages = _StageReader(scenario, bundle.variables, obs)
    stdin_r, stdin_w = os.pipe()

    def while_running(pid: int) -> None:
        stages.probe, stages.created_exe = _HostProbe(pid, bundle.variables), _init_exe(driver)
        try:
            stages.probe.cgroups()
        except OSError:  # its /proc entry is gone: it ended before it could be looked at
            seen_gone.append(pid)
        if not seen_gone:
            _while_running(scenario, driver, pid, cid, stages, obs)
        _let_go(stdin_w)

    seen_gone: list[int] = []

    keep = bool(stages.wanted["exited"])
    try:
        outcome = driver.run_attached(bundle.path, cid, stdin_r, out, err, scenario.timeout, while_running, keep)
        try:
            if stages.probe is None or seen_gone:  # the entrypoint ended (or failed) before it was looked at
                _not_seen_running(scenario, stages, obs,
                                  "the entrypoint was not seen running (it exited first, or exec never happened)")
            if keep:  # facts that need no process (PID_FREE)
                stages.probe = stages.probe or _HostProbe(0, bundle.variables)
                stages.read("exited")
        finally:
            if keep:
                driver.delete(cid, force=True)
    finally:
        os.close(stdin_r)
        _let_go(stdin_w)
    obs.exit, obs.timed_out = outcome.exit, outcome.timed_out


def _let_go(fd: int) -> None:
    """The entrypoint's ``read _`` returns: one line, then end of input (closed once)."""
    try:
        os.write(fd, b"\n")
        os.close(fd)
    except OSError:  # closed already, or the container is gone
        pass


def _lifecycle(scenario: Scenario, driver: RuntimeDriver, bundle: Bundle, cid: str,
               out: IO[bytes], err: IO[bytes], obs: Observation) -> None:
    stages = _StageReader(scenario, bundle.variables, obs)
    with lifecycle.running(driver, bundle.path, cid, out, err, scenario.timeout, at=stages.at) as container:
        if stages.wanted["running"] or scenario.inside_checks:
            assert container.pid is not None
            _while_running(scenario, driver, container.pid, cid, stages, obs)
    obs.exit, obs.timed_out = container.exit, container.timed_out


def _while_running(scenario: Scenario, driver: RuntimeDriver, pid: int, cid: str,
                   stages: _StageReader, obs: Observation) -> None:
    """Host facts and testinfra checks, once the entrypoint is seen running (a sandbox: once started,
    since its state pid never execs the entrypoint)."""
    if obs.sandboxed or _wait_exec(pid, stages.created_exe, min(EXEC_WAIT_S, scenario.timeout)):
        stages.read("running")
        if scenario.inside_checks:  # commands inside, through the runtime's exec
            obs.inside = inside.read(scenario, driver.exec_argv(cid), cid, stages.variables)
    else:
        _not_seen_running(scenario, stages, obs,
                          "the entrypoint was not seen running (it exited first, or exec never happened)")


def _not_seen_running(scenario: Scenario, stages: _StageReader, obs: Observation, why: str) -> None:
    obs.facts += [FactReading(f, error=why) for f in stages.wanted["running"]]
    if scenario.inside_checks:
        obs.inside = inside.not_running(scenario, why)
