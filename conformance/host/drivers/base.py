"""The driver interface: what the harness asks of a runtime, whatever lane drives it.

A *lane* is how a runtime is driven: ``bare`` is its own runc-compatible CLI
with a private ``--root`` (``cli.py``); ``NAME:rootless`` is NAME run by an
unprivileged user (``rootless.py``); ``containerd/NAME`` (a private
containerd and its runc shim) is the lane to come.  Everything above the drivers —
``lifecycle.py``, ``observe.py``, ``steps.py``, the ``container_host``
fixture — uses only what this class declares, so a lane is one class and one
entry in ``drivers/__init__.py``.  ``tests/test_drivers.py`` checks every
registered class against this one (nothing abstract left, the same
signatures), as pytest-testinfra checks its backends against ``BaseBackend``.

Per-runtime quirks (crun on a hybrid host, runsc's flags) stay in
``runtimes.py``'s profiles: they hold in every lane.  Per-lane quirks (how a
lane learns an exit status, what it must reap) stay in that lane's class.
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, ClassVar, Mapping, Sequence

from conformance.model.errors import DriverError
from conformance.model.records import RuntimeEntry, SandboxProbe
from conformance.model.scenario import Scenario

from ..bundle import AS_WRITTEN, LaneNeeds
from ..console import Console
from ..image import HARNESS_SNAPSHOTTER, Snapshotter
from ..runtimes import RuntimeProfile


class VerbFailed(DriverError):
    """The runtime answered a verb with a non-zero exit: a refusal, not a harness fault.

    Lifecycle steps expect some refusals (``start: fails``, ``state: absent``)
    and read ``exit`` and ``output`` as evidence; elsewhere it is a DriverError.
    """

    def __init__(self, label: str, verb: str, exit: int, output: str, shown: str | None = None) -> None:
        self.exit, self.output = exit, output
        super().__init__(f"{label} {verb} failed (exit {exit}): {output[-500:] if shown is None else shown}")


@dataclass(frozen=True)
class Launch:
    """How the runtime process itself is started, beyond the bundle: what a caller may hand it.

    ``fds`` are descriptors of the harness that the runtime process starts
    with, at 3, 4, … in this order (a caller's open files, sockets, pipes);
    ``preserve_fds`` is ``--preserve-fds N``; ``console`` the receiving end
    of ``--console-socket`` (a container with ``process.terminal``: create
    names its path; only create, since a foreground run relays a terminal
    itself, on its own stdio).  The default is what the harness always did:
    stdio only.
    """

    fds: tuple[int, ...] = ()
    preserve_fds: int = 0
    console: Console | None = None


#: stdio only: how every runtime process is started unless a scenario says otherwise
NO_LAUNCH = Launch()

#: ``update``'s vocabulary: a resource -> the runc-compatible flag that sets it
UPDATE_FLAGS: dict[str, str] = {
    "memory": "--memory", "memory_swap": "--memory-swap", "memory_reservation": "--memory-reservation",
    "pids": "--pids-limit", "cpu_quota": "--cpu-quota", "cpu_period": "--cpu-period",
    "cpu_shares": "--cpu-share", "cpuset_cpus": "--cpuset-cpus", "cpuset_mems": "--cpuset-mems",
}


@dataclass
class RunOutcome:
    """What a foreground run produced."""

    exit: int | None
    timed_out: bool
    duration_s: float


def unspell(spelling: str, text: str) -> str | None:
    """The runtime ``text`` names when it is written as ``spelling`` (``{}`` standing for the runtime),
    or None.  A function of the spelling alone: the registry (``drivers.DRIVERS``) parses a value
    without importing the module of a lane the value does not name."""
    prefix, _, suffix = spelling.partition("{}")
    inner = text[len(prefix):len(text) - len(suffix)]
    return inner if inner and text.startswith(prefix) and text.endswith(suffix) else None


class RuntimeDriver(abc.ABC):
    """One runtime in one lane, with a state root private to this process.

    ``root`` is this driver's own directory: whatever the lane keeps there
    (the runtime's ``--root``, an engine's state) is removed by ``cleanup``.
    """

    #: the registry key (``drivers.DRIVERS``)
    lane: ClassVar[str] = ""
    #: how a ``--runtime`` value names this lane, ``{}`` standing for the runtime:
    #: ``{}`` (bare), ``containerd/{}``, ``{}:rootless``
    spelling: ClassVar[str] = "{}"
    #: the lane's engine takes a terminal container's console itself and relays it (a shim): the
    #: harness then gives no console socket, and the terminal's output arrives on the task's stdout
    relays_terminal: ClassVar[bool] = False
    #: whether the container's processes write the scenario's stdout file themselves (the bare
    #: lane hands it to the runtime), rather than a copy the harness makes (an engine's FIFOs):
    #: only then can who holds the file say that no more output can come (writers.py)
    writes_output_itself: ClassVar[bool] = False

    def __init__(self, profile: RuntimeProfile, root: Path) -> None:
        self.profile = profile
        self.root = root
        #: whether this runtime runs its containers in a sandbox, as its probe found
        #: (host/sandbox.py, made once per driver by the session); None until then
        self.sandbox: SandboxProbe | None = None

    # -- identity: the matrix's column and its runtimes entry ------------------
    @classmethod
    def qualify(cls, runtime: str) -> str:
        """The lane-qualified name of ``runtime`` (a column label, or a ``--runtime`` value)."""
        return cls.spelling.format(runtime)

    @classmethod
    def unqualify(cls, text: str) -> str | None:
        """The runtime a lane-qualified ``--runtime`` value names in this lane, or None if not this lane's."""
        return unspell(cls.spelling, text)

    @classmethod
    def describe(cls, profile: RuntimeProfile) -> RuntimeEntry:
        """The matrix's ``runtimes`` entry: how the runtime was found and driven (its lane, whether it ran
        as an unprivileged user; on the bare lane the harness itself unpacks and mounts a scenario's image)."""
        entry = profile.as_json()
        entry.update({"lane": cls.lane, "rootless": False, "snapshotter": HARNESS_SNAPSHOTTER})
        return entry

    @property
    def label(self) -> str:
        """The column's name: the runtime's label, qualified by the lane."""
        return self.qualify(self.profile.name)

    @property
    def version(self) -> str:
        return self.profile.version

    @property
    def spec_version(self) -> str:
        """The ``ociVersion`` a config.json for this runtime is written at (learned from the runtime)."""
        return self.profile.spec_version

    @property
    def adaptations(self) -> list[str]:
        """Every way the runtime is driven differently from the plain CLI; the matrix prints them."""
        return self.profile.adaptations

    @property
    def images(self) -> Snapshotter | None:
        """Who unpacks and mounts a scenario's image on this lane; None: the harness (image.py), as the
        bare lane has no engine to do it."""
        return None

    @property
    def bundle_needs(self) -> LaneNeeds:
        """What this lane changes in a scenario's bundle (its config, its owner): bundle.build takes it.
        The bare lane runs the config as the scenario writes it."""
        return AS_WRITTEN

    @property
    def sandboxed(self) -> str | None:
        """How the probe saw that the state pid is a sandbox, not the entrypoint (host facts then
        describe the sandbox); None when it is the entrypoint, or before the probe."""
        return self.sandbox.evidence if self.sandbox is not None and self.sandbox.sandboxed else None

    def unsupported(self, scenario: Scenario) -> str | None:
        """Why this lane cannot express ``scenario`` (a step or a launch the lane has no equivalent of),
        or None.  The executor skips the cell with this sentence instead of running half of it: a step
        the lane cannot drive must never pass silently.  The bare lane expresses everything."""
        return None

    # -- verbs ---------------------------------------------------------------
    @abc.abstractmethod
    def run(self, bundle: Path, cid: str, stdout: IO[bytes], stderr: IO[bytes], timeout: float,
            launch: Launch = NO_LAUNCH) -> RunOutcome:
        """Run the container in the foreground to its end; it is gone afterwards, however it ended."""

    @property
    def keeps_after_run(self) -> bool:
        """Whether ``run_attached(keep=True)`` can leave the stopped container for the caller to read."""
        return True

    def run_attached(self, bundle: Path, cid: str, stdin: int, stdout: IO[bytes], stderr: IO[bytes],
                     timeout: float, while_running: Callable[[int], None], keep: bool = False,
                     launch: Launch = NO_LAUNCH) -> RunOutcome:
        """Run the container to its end, calling ``while_running(init pid)`` once it was started.

        The container's stdin is ``stdin`` (a pipe the caller holds: an
        entrypoint waiting on it stays up until ``while_running`` lets it
        go).  ``while_running`` is not called when the container ended, or
        never started, before its pid was known.  The container is gone
        afterwards, however it ended — unless ``keep`` (and
        ``keeps_after_run``): then a container that ended by itself stays,
        stopped, for the caller to read and delete.  This default drives the
        verbs one by one; a lane whose runtime has a cheaper way (the bare
        CLI's ``run --pid-file``: one runtime process instead of create,
        start, delete) overrides it.
        """
        started = time.monotonic()
        kept = False
        try:
            pid = self.create(bundle, cid, stdin, stdout, stderr, timeout, launch)
            self.start(cid)
            while_running(pid)
            exit, timed_out = self.wait(cid, max(0.0, timeout - (time.monotonic() - started)))
            if timed_out:
                try:
                    self.kill(cid, "KILL")
                except DriverError:
                    pass
                self.wait(cid, 5.0)
            kept = keep and not timed_out
            return RunOutcome(exit, timed_out, time.monotonic() - started)
        finally:
            if not kept:
                self.delete(cid, force=True)

    @abc.abstractmethod
    def create(self, bundle: Path, cid: str, stdin: int, stdout: IO[bytes], stderr: IO[bytes],
               timeout: float, launch: Launch = NO_LAUNCH) -> int:
        """Create the container (its entrypoint not yet run); returns the init's host pid.

        Raises DriverError when it cannot, after removing what a cut-short create left.
        """

    @abc.abstractmethod
    def start(self, cid: str) -> None:
        """Run the created container's entrypoint; VerbFailed when the runtime refuses."""

    @abc.abstractmethod
    def state(self, cid: str) -> dict[str, Any]:
        """The runtime-spec state (status, pid, …) in one call; VerbFailed for an id it does not know."""

    @abc.abstractmethod
    def kill(self, cid: str, sig: str = "KILL") -> None:
        """Send ``sig`` (a name without SIG, or a number) to the init; VerbFailed when refused."""

    def stop(self, cid: str) -> None:
        """End a live container for its removal (the harness's cleanup, never a checked verb): by
        default the runtime's own ``kill``; quiet when refused."""
        try:
            self.kill(cid, "KILL")
        except DriverError:
            pass

    @abc.abstractmethod
    def wait(self, cid: str, timeout: float) -> tuple[int | None, bool]:
        """(exit status as 128+N for a signal, or None if unknown; timed out) of the created init."""

    @abc.abstractmethod
    def delete(self, cid: str, force: bool = True) -> None:
        """Delete the container.

        ``force``: kill it first if it runs, stay quiet when it is already
        gone, and leave nothing of it behind — the guarantee every cleanup
        path relies on.  Without ``force`` (a lifecycle step) a refusal is
        VerbFailed and the container stays.
        """

    @abc.abstractmethod
    def pause(self, cid: str) -> None:
        """Freeze every process of the running container; VerbFailed when the runtime refuses."""

    @abc.abstractmethod
    def resume(self, cid: str) -> None:
        """Thaw the paused container; VerbFailed when the runtime refuses."""

    @abc.abstractmethod
    def update(self, cid: str, resources: Mapping[str, int | str]) -> None:
        """Change a running container's limits (keys of ``UPDATE_FLAGS``); VerbFailed when refused."""

    @abc.abstractmethod
    def ps(self, cid: str) -> list[int]:
        """The container's processes as the runtime lists them (host pids, or a sandbox's own)."""

    @abc.abstractmethod
    def call(self, args: Sequence[str], timeout: float) -> tuple[int, str]:
        """Run the runtime with ``args`` as given (after its private root and global flags):
        (exit status, what it printed).  The command line itself is under test here."""

    @abc.abstractmethod
    def exec_argv(self, cid: str, flags: Sequence[str] = ()) -> list[str]:
        """The argv prefix that runs a command inside the running container: append the command's argv.
        ``flags``: exec's own (``--user 1000``, ``--pid-file F`` …), as runc spells them."""

    def force_delete(self, cid: str) -> tuple[int, str]:
        """A forced delete as a checked verb (a lifecycle step): (exit status, what was said).

        ``delete(force=True)`` is the quiet cleanup; this one reports.  The
        bare lane asks the CLI (``delete --force ID``); an engine lane does
        what the engine's own forced removal does.
        """
        return self.call(["delete", "--force", cid], 30.0)

    def sweep_argv(self) -> list[str]:
        """The runtime's argv at the state root its containers live under, without this process:
        saved beside the root, so a later run can list and delete what a killed one left."""
        return self.profile.argv(self.root)

    @classmethod
    def sweep_dead(cls, state_root: Path) -> list[str]:
        """Remove what this lane left under a killed session's ``state_root`` beyond its runtime's
        containers (an engine's daemon, its shims); returns what was removed.  The bare lane has none."""
        return []

    @classmethod
    def close_session(cls, state_root: Path) -> list[str]:
        """Stop what this lane keeps for a whole session (an engine's daemon) at the session's end,
        after every driver's ``cleanup``, whatever those did; returns what was still running."""
        return []

    @abc.abstractmethod
    def list_ids(self) -> list[str]:
        """Ids of the containers this driver's state root still holds."""

    @abc.abstractmethod
    def cleanup(self) -> list[str]:
        """Remove every container and process this driver made, then its root; returns what was left."""
