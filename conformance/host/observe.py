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
from typing import IO, Any

from conformance.model.errors import DriverError
from conformance.model.placeholders import fill
from conformance.model.records import FactReading, Observation
from conformance.model.scenario import HostFact, Scenario

from . import cgroupfs, hoststate, inside, lifecycle
from .bundle import Bundle
from .drivers import RuntimeDriver
from .image import read_layer_file
from .steps import run_steps

EXEC_WAIT_S = 5.0


class _HostProbe:
    """Reads host facts about one container init (pid) at a given stage."""

    def __init__(self, pid: int, variables: dict[str, str], config: dict[str, Any]) -> None:
        self.pid = pid
        self.variables, self.config = variables, config
        self.mount_map = cgroupfs.mounts()
        try:  # read while the process exists: cgroup values are read after it exited
            self.cgroups: dict[str, str] | None = cgroupfs.process_cgroups(pid)
        except OSError:  # a lifecycle scenario's facts come after its last step: the init may be gone
            self.cgroups = None
        self.hostname = socket.gethostname()

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
        if fact.kind == "proc" and fact.target in hoststate.LINK_FACTS:
            return hoststate.link_view(self.pid, fact.target)
        if fact.kind == "proc" and fact.target == "environ":
            return hoststate.environ_view(self.pid, self.config)
        if fact.kind == "proc":
            text = Path(f"/proc/{self.pid}/{fact.target}").read_text()
            return _field(text, fact.field) if fact.field else text
        if fact.kind == "cgroup":
            if self.cgroups is None:
                raise LookupError(f"the container's init (pid {self.pid}) was gone before its cgroups were read")
            return cgroupfs.read_value(fact.target, self.cgroups, self.mount_map)
        if fact.kind == "host_file":
            return Path(fill(fact.target, self.variables)).read_text()
        if fact.kind == "host_hostname_unchanged":
            return socket.gethostname()
        if fact.kind == "layer_file":
            return read_layer_file(fact.target, fact.layer or "", self.variables)
        if fact.kind == "host_unchanged":
            return hoststate.net_state(fact.target, self.variables)
        if fact.kind == "mounts_declared":
            return hoststate.undeclared_mounts(self.pid, self.config, self.variables["rootfs"])
        if fact.kind == "runtime_binary_unchanged":
            return hoststate.runtime_digest(self.variables["runtime_path"])
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
            elif scenario.needs_lifecycle:
                _lifecycle(scenario, driver, bundle, cid, out, err, obs)
            else:
                outcome = driver.run(bundle.path, cid, out, err, scenario.timeout)
                obs.exit, obs.timed_out = outcome.exit, outcome.timed_out
                obs.runtime_exit = outcome.exit  # the container's status is what `RUNTIME run` returned
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
        if scenario.host_facts:  # a lifecycle scenario's host facts: after its last step, before delete
            if container.pid is None:
                obs.facts += [FactReading(f, error="no container was created") for f in scenario.host_facts]
            else:
                probe = _HostProbe(container.pid, bundle.variables, bundle.config)
                obs.facts += [probe.read(f) for f in scenario.host_facts]
    obs.exit, obs.timed_out = container.exit, container.timed_out


class _StageReader:
    """Reads the scenario's host facts at each stage ``lifecycle.running`` stops at."""

    def __init__(self, scenario: Scenario, bundle: Bundle, obs: Observation) -> None:
        self.wanted = {stage: [f for f in scenario.host_facts if f.when == stage]
                       for stage in ("created", "running", "exited", "deleted")}
        self.variables, self.config, self.obs = bundle.variables, bundle.config, obs
        self.probe: _HostProbe | None = None
        self.created_exe: str | None = None

    def at(self, stage: str, container: lifecycle.Container) -> None:
        if stage == "created":
            assert container.pid is not None
            self.probe = _HostProbe(container.pid, self.variables, self.config)
            self.created_exe = _exe(container.pid)
        self.read(stage)

    def read(self, stage: str) -> None:
        assert self.probe is not None, "no probe before the container was created"
        self.obs.facts += [self.probe.read(f) for f in self.wanted[stage]]


def _lifecycle(scenario: Scenario, driver: RuntimeDriver, bundle: Bundle, cid: str,
               out: IO[bytes], err: IO[bytes], obs: Observation) -> None:
    stages = _StageReader(scenario, bundle, obs)
    with lifecycle.running(driver, bundle.path, cid, out, err, scenario.timeout, at=stages.at) as container:
        if stages.wanted["running"] or scenario.inside_checks:
            _while_running(scenario, driver, container, stages, obs)
    obs.exit, obs.timed_out = container.exit, container.timed_out


def _while_running(scenario: Scenario, driver: RuntimeDriver, container: lifecycle.Container,
                   stages: _StageReader, obs: Observation) -> None:
    """Host facts and testinfra checks, once the entrypoint is seen running (a sandbox: once started,
    since its state pid never execs the entrypoint)."""
    assert container.pid is not None
    if obs.sandboxed or _wait_exec(container.pid, stages.created_exe, min(EXEC_WAIT_S, scenario.timeout)):
        stages.read("running")
        if scenario.inside_checks:  # commands inside, through the runtime's exec
            obs.inside = inside.read(scenario, driver.exec_argv(container.cid), container.cid,
                                     stages.variables)
    else:
        why = "the entrypoint was not seen running (it exited first, or exec never happened)"
        obs.facts += [FactReading(f, error=why) for f in stages.wanted["running"]]
        obs.inside = inside.not_running(scenario, why)
