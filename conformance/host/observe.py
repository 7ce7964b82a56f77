"""Run one scenario's container and observe it, from inside and from the host.

Inside: the entrypoint's exit status, stdout and stderr (written to files in
the bundle, so a container that leaves a background child cannot hold a
pipe open).  Host: facts read at the moment the scenario asks — after create,
while the entrypoint runs, or after it exited but before delete — because a
cgroup counter only exists until delete, and a namespace link only while the
process lives.

A scenario goes through one ``run``, the runtime's fastest path, whenever
that shows everything it reads (``_one_run_serves``: facts while the
entrypoint runs, after its exit with ``run --keep``, after run's own delete);
one that reads before start or while paused, or must tell a refused create
apart, goes through ``lifecycle.running`` (create, start, wait, delete, with a
probe at each stage); a lifecycle scenario drives the same verbs one by one
(steps.py).  The container's stdin is a pipe the harness
holds: a scenario that must stay alive for a "running" probe ends with
``read _``, and the harness closes the pipe when done.
"""
from __future__ import annotations

import functools
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from conformance.model.errors import DriverError
from conformance.model.placeholders import fill, named
from conformance.model.records import FactReading, Observation
from conformance.model.scenario import HostFact, Scenario

from . import cgroupfs, facts, handover, hoststate, inside, lifecycle
from .bundle import Bundle
from .drivers import RuntimeDriver
from .drivers.base import Launch
from .image import read_layer_file
from .steps import refused_create, run_steps

EXEC_WAIT_S = 5.0


class _HostProbe:
    """Reads host facts about one container init (pid) at a given stage."""

    def __init__(self, pid: int, variables: dict[str, str], config: dict[str, Any]) -> None:
        self.pid = pid
        self.variables, self.config = variables, config
        try:  # read while the process exists: cgroup values are read after it exited
            self.cgroups: dict[str, str] | None = cgroupfs.process_cgroups(pid)
        except OSError:  # a lifecycle scenario's facts come after its last step: the init may be gone
            self.cgroups = None
        self.hostname = socket.gethostname()

    @functools.cached_property
    def mount_map(self) -> dict[str, Path]:
        """Where each cgroup hierarchy is mounted on the host: read once per container, and only when a
        fact or the leftover check needs it (~0.1 ms: the whole mount table is read)."""
        return cgroupfs.mounts()

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
        if fact.kind == "proc" and (fd := hoststate.FD_LINK.match(fact.target)):
            return hoststate.fd_view(self.pid, int(fd.group(1)))
        if fact.kind == "proc" and fact.target in hoststate.LINK_FACTS:
            return hoststate.link_view(self.pid, fact.target)
        if fact.kind == "proc" and fact.target == "environ":
            return hoststate.environ_view(self.pid, self.config)
        if fact.kind == "proc":
            path = Path(f"/proc/{self.pid}/{fact.target}")
            if path.is_symlink() or path.is_dir():  # cwd, fd/ …
                return facts.proc_entry(path)
            text = path.read_text()
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
        if fact.kind == "host_stat":
            return facts.host_stat(fill(fact.target, self.variables))
        if fact.kind == "cgroup_view":
            return facts.cgroup_view(self.pid)
        if fact.kind == "tasks":
            if self.cgroups is None:
                raise LookupError(f"the container's init (pid {self.pid}) was gone before its cgroups were read")
            return facts.tasks(self.cgroups, self.mount_map)
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


def _read_outputs(bundle: Bundle, obs: Observation) -> None:
    obs.stdout = (bundle.path / "stdout").read_text(errors="replace")
    obs.stderr = (bundle.path / "stderr").read_text(errors="replace")


def _log_file(path: Path) -> IO[bytes]:
    """The container's stdout or stderr: a root-owned 0600 host file, like a daemon's log.

    A runtime is handed it as is, and must leave it so (gVisor's runsc fchowns
    its stdio to its sandbox's user): scenario stdio-ownership-unchanged reads
    its owner and mode with ``host_stat``.
    """
    return open(path, "wb", opener=lambda name, flags: os.open(name, flags, 0o600))  # .name: the path


def observe(scenario: Scenario, driver: RuntimeDriver, bundle: Bundle, cid: str,
            sandboxed: str | None = None, one_run: bool = True) -> Observation:
    """Run the container once and collect everything the scenario's expectations need.

    ``sandboxed``: the sandbox probe's evidence when the runtime's state pid is not the
    entrypoint (host/sandbox.py); the observation carries it to the judge.  ``one_run``: False
    after InitUnseen, so that create and start show the init this time.
    """
    obs = Observation(sandboxed=sandboxed)
    started = time.monotonic()
    stages = _StageReader(scenario, bundle, obs)
    unseen = False
    with _log_file(bundle.path / "stdout") as out, _log_file(bundle.path / "stderr") as err, \
            handover.handed(scenario.launch, bundle.path,
                            _terminal(bundle.config) and not driver.relays_terminal) as (launch, handed_vars):
        bundle.variables.update(handed_vars)
        try:
            if scenario.steps:
                _steps(scenario, driver, bundle, cid, out, err, obs, stages, launch)
            elif one_run and launch.console is None and _one_run_serves(scenario, driver, bundle.config):
                unseen = not _attached(scenario, driver, bundle, cid, out, err, obs, stages, launch)
            elif scenario.needs_lifecycle or launch.console is not None:  # a terminal needs create/start
                _lifecycle(scenario, driver, bundle, cid, out, err, obs, stages, launch)
            else:
                outcome = driver.run(bundle.path, cid, out, err, scenario.timeout, launch)
                obs.exit, obs.timed_out = outcome.exit, outcome.timed_out
                obs.runtime_exit = outcome.exit  # the container's status is what `RUNTIME run` returned
        except DriverError as exc:
            obs.runtime_error = str(exc)
        finally:
            obs.leaks = _leftovers(bundle, cid, stages)
    if unseen:
        raise InitUnseen(obs.leaks)
    _read_outputs(bundle, obs)
    obs.duration_s = time.monotonic() - started
    return obs


def _terminal(config: dict[str, Any]) -> bool:
    """Whether the container's process gets a terminal (its stdout is then the pty's output)."""
    return (config.get("process") or {}).get("terminal") is True


def _leftovers(bundle: Bundle, cid: str, stages: _StageReader) -> list[str]:
    """The container's cgroups that outlived delete (removed now): at the cgroupsPath the harness
    gave, or, in a config without one, at the paths the runtime chose (seen after create) that
    name the container; a path that does not name it may be shared, and is left alone."""
    given = bundle.config["linux"].get("cgroupsPath")
    mount_map = stages.probe.mount_map if stages.probe is not None else None
    if given:
        return cgroupfs.remove_leftovers(given, mount_map)
    seen = (stages.probe.cgroups or {}).values() if stages.probe is not None else ()
    return [leak for path in sorted(set(seen)) if cid in path for leak in cgroupfs.remove_leftovers(path, mount_map)]


def _steps(scenario: Scenario, driver: RuntimeDriver, bundle: Bundle, cid: str, out: IO[bytes],
           err: IO[bytes], obs: Observation, stages: _StageReader, launch: Launch) -> None:
    with lifecycle.held(driver, bundle.path, cid, out, err, scenario.timeout, launch) as container:
        obs.steps = run_steps(list(scenario.steps), container, bundle.path / "stdout", bundle.variables,
                              stages.at)
    obs.exit, obs.timed_out = container.exit, container.timed_out
    obs.runtime_error = refused_create(scenario.steps, obs.steps)
    stages.never_reached()


class _StageReader:
    """Reads the scenario's host facts at each stage the container passes (lifecycle.running's,
    or a lifecycle scenario's steps: steps.py), each stage once."""

    def __init__(self, scenario: Scenario, bundle: Bundle, obs: Observation) -> None:
        self.wanted = {stage: [f for f in scenario.host_facts if f.when == stage]
                       for stage in ("created", "running", "paused", "exited", "deleted")}
        self.variables, self.config, self.obs = bundle.variables, bundle.config, obs
        self.timeout = min(EXEC_WAIT_S, scenario.timeout)
        self.probe: _HostProbe | None = None
        self.created_exe: str | None = None
        self.done: set[str] = set()

    def at(self, stage: str, container: lifecycle.Container) -> None:
        if stage == "created":
            assert container.pid is not None
            self.variables["init_pid"] = str(container.pid)  # {{init_pid}}: the init's host pid
            self.probe = _HostProbe(container.pid, self.variables, self.config)
            self.created_exe = container.created_exe
        if stage == "running" and self.wanted["running"] and "running" not in self.done:
            assert container.pid is not None
            if not (self.obs.sandboxed or lifecycle.wait_exec(container.pid, self.created_exe, self.timeout)):
                self.obs.facts += [FactReading(f, error=NOT_SEEN_RUNNING) for f in self.wanted["running"]]
                self.done.add("running")
                return
        self.read(stage)

    def read(self, stage: str) -> None:
        if stage in self.done or self.probe is None:
            return
        self.done.add(stage)
        self.obs.facts += [self.probe.read(f) for f in self.wanted[stage]]

    def never_reached(self) -> None:
        """A fact whose stage the steps never reached (a create or pause that failed) is a
        check that could not be read, not one left out."""
        for stage, wanted in self.wanted.items():
            if stage not in self.done:
                self.obs.facts += [FactReading(f, error=f"the steps never reached stage {stage!r}")
                                   for f in wanted]


NOT_SEEN_RUNNING = "the entrypoint was not seen running (it exited first, or exec never happened)"


def _one_run_serves(scenario: Scenario, driver: RuntimeDriver, config: dict[str, Any]) -> bool:
    """Everything the scenario reads, one ``run`` lets it read: while the entrypoint runs; after it
    ended, when the runtime's ``run`` can keep the stopped container (``--keep``) and the fact needs no
    process, or is a cgroup's (its path taken while the init ran: ``_attached``); after the delete,
    when the fact needs no process (``run`` deletes what it ran, poststop hooks included).  Nothing is
    read before start or while paused, and no refused create is told apart from the entrypoint's own
    exit.  A scenario that names ``{{init_pid}}`` goes through create: its pid file is the one that is
    there before anything runs (``run``'s may never be read when the entrypoint ends first, and then
    the placeholder would have no value).  Nor limits the lane gives no cgroup for (rootless, nothing
    delegated): their refusal is the cell's finding."""
    def served(fact: HostFact) -> bool:
        if fact.when == "exited":
            return driver.keeps_after_run and (fact.kind in PID_FREE or fact.kind == "cgroup")
        return fact.when == "running" or (fact.when == "deleted" and fact.kind in PID_FREE)

    return (scenario.needs_lifecycle and not scenario.steps and not scenario.expect.or_refused
            and all(served(f) for f in scenario.host_facts) and bool(_init_exe(driver))
            and not named(scenario.source, "init_pid") and not driver.bundle_needs.unplaceable_limits(config))


#: facts that need no process to be read (an entrypoint that ended before its pid was seen does not
#: keep them from being read after the exit); a cgroup fact needs the init's cgroups, read while it lives
PID_FREE = ("host_file", "layer_file", "host_stat", "host_unchanged", "runtime_binary_unchanged")


class InitUnseen(Exception):
    """One ``run`` ended before the harness saw its init, and the scenario reads the init's cgroups
    after the exit: they are unknown.  The executor runs the scenario again, through create and
    start (which show the init before it runs); ``leaks``: what the first container left behind."""

    def __init__(self, leaks: list[str]) -> None:
        super().__init__("the container's init ended before the harness saw it")
        self.leaks = leaks


def _init_exe(driver: RuntimeDriver) -> str:
    """What the runtime's own init reads as /proc/<pid>/exe before it execs the entrypoint (its probe
    learned it); "" when unknown: then only create/start tells the two moments apart."""
    return driver.sandbox.init_exe if driver.sandbox is not None else ""


@dataclass
class _Started:
    """A container ``run`` started: its init's pid and its id (what ``_while_running`` needs)."""

    pid: int
    cid: str


def _attached(scenario: Scenario, driver: RuntimeDriver, bundle: Bundle, cid: str, out: IO[bytes],
              err: IO[bytes], obs: Observation, stages: _StageReader, launch: Launch) -> bool:
    """One foreground run: facts and checks read once the init was started and exec'd the entrypoint,
    then its stdin let go; with ``--keep``, the after-exit facts read before the delete; the
    after-delete ones last.  False when an after-exit cgroup fact could not be read because the init
    ended before it was seen (its cgroups are unknown): the caller goes through create and start."""
    stdin_r, stdin_w = os.pipe()
    gone: list[int] = []

    def while_running(pid: int) -> None:
        stages.probe, stages.created_exe = _HostProbe(pid, stages.variables, stages.config), _init_exe(driver)
        if stages.probe.cgroups is None:  # its /proc entry is gone: it ended before it could be looked at
            gone.append(pid)
        else:
            _while_running(scenario, driver, _Started(pid, cid), stages, obs)
            stages.done.add("running")
        _let_go(stdin_w)

    keep = bool(stages.wanted["exited"])
    try:
        outcome = driver.run_attached(bundle.path, cid, stdin_r, out, err, scenario.timeout, while_running, keep,
                                      launch)
        try:
            if stages.probe is None or gone:  # the entrypoint ended (or failed) before it was looked at
                obs.facts += [FactReading(f, error=NOT_SEEN_RUNNING) for f in stages.wanted["running"]]
                if scenario.inside_checks:
                    obs.inside = inside.not_running(scenario, NOT_SEEN_RUNNING)
            stages.probe = stages.probe or _HostProbe(0, stages.variables, stages.config)
            if keep and stages.probe.cgroups is None and any(f.kind == "cgroup" for f in stages.wanted["exited"]):
                return False
            if keep:  # PID_FREE facts, and cgroups whose paths were taken while the init ran
                stages.read("exited")
        finally:
            if keep:
                driver.delete(cid, force=True)
        stages.read("deleted")  # run deleted what it ran (or the delete above did): poststop hooks ran
    finally:
        os.close(stdin_r)
        _let_go(stdin_w)
    obs.exit, obs.timed_out = outcome.exit, outcome.timed_out
    obs.runtime_exit = outcome.exit  # what `RUNTIME run` returned: no second run needed for it
    return True


def _let_go(fd: int) -> None:
    """The entrypoint's ``read _`` returns: one line, then end of input (closed once)."""
    try:
        os.write(fd, b"\n")
        os.close(fd)
    except OSError:  # closed already, or the container is gone
        pass


def _lifecycle(scenario: Scenario, driver: RuntimeDriver, bundle: Bundle, cid: str, out: IO[bytes],
               err: IO[bytes], obs: Observation, stages: _StageReader, launch: Launch) -> None:
    with lifecycle.running(driver, bundle.path, cid, out, err, scenario.timeout, at=stages.at,
                           launch=launch) as container:
        if stages.wanted["running"] or stages.wanted["paused"] or scenario.inside_checks:
            _while_running(scenario, driver, container, stages, obs)
    obs.exit, obs.timed_out = container.exit, container.timed_out


def _while_running(scenario: Scenario, driver: RuntimeDriver, container: lifecycle.Container | _Started,
                   stages: _StageReader, obs: Observation) -> None:
    """Host facts and testinfra checks, once the entrypoint is seen running (a sandbox: once started,
    since its state pid never execs the entrypoint)."""
    assert container.pid is not None
    if obs.sandboxed or lifecycle.wait_exec(container.pid, stages.created_exe, min(EXEC_WAIT_S, scenario.timeout)):
        stages.read("running")
        if scenario.inside_checks:  # commands inside, through the runtime's exec
            obs.inside = inside.read(scenario, driver.exec_argv(container.cid), container.cid,
                                     stages.variables)
        if stages.wanted["paused"]:  # facts `when: paused`: pause, read them, resume (never a one-run scenario)
            assert isinstance(container, lifecycle.Container)
            _paused(driver, container, stages)
    else:
        obs.facts += [FactReading(f, error=NOT_SEEN_RUNNING) for f in stages.wanted["running"]]
        obs.inside = inside.not_running(scenario, NOT_SEEN_RUNNING)


def _paused(driver: RuntimeDriver, container: lifecycle.Container, stages: _StageReader) -> None:
    try:
        driver.pause(container.cid)
    except DriverError as exc:
        stages.obs.facts += [FactReading(f, error=f"pause failed: {exc}") for f in stages.wanted["paused"]]
        stages.done.add("paused")
        return
    try:
        stages.at("paused", container)
    finally:
        driver.resume(container.cid)
