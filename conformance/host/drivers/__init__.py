"""Runtime drivers, registered by lane: which class drives a ``--runtime`` value.

As pytest-testinfra's ``BACKENDS`` maps a connection type (``ssh``,
``docker`` …) to its backend class, ``DRIVERS`` maps a lane's name to its
driver class.  Each class says how a ``--runtime`` value spells its lane
(``RuntimeDriver.spelling``), so ``parse`` needs no table of its own: adding
the containerd or the rootless lane is one class and one entry here.
``tests/test_drivers.py`` checks every entry against the interface
(``base.py``).

The bare lane's class is imported with this package (every run drives a CLI);
the other lanes' modules are imported the first time their class is asked
for (``DRIVERS[lane]``): a ``--runtime=runc`` run never loads containerd's
client nor the rootless user's machinery (~15 ms of the plugin's imports here).
Such an entry is registered with its spelling, so ``parse`` reads a value
without importing anything, and the class must spell its lane the same way
(checked when it is imported).  Iterating over ``DRIVERS.values()`` imports
every lane: the sweep of a killed run does so only when it found one.

    parse("runc")            -> Lane("bare", "runc")
    parse("/opt/my-runc")    -> Lane("bare", "/opt/my-runc")
    parse("containerd/runc") -> Lane("containerd", "runc")
    parse("runc:rootless")   -> Lane("rootless", "runc")
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, MutableMapping, Union

from conformance.model.records import RuntimeEntry

from .. import runtimes
from .base import RunOutcome, RuntimeDriver, VerbFailed, unspell
from .cli import CliDriver


@dataclass(frozen=True)
class Deferred:
    """A lane whose driver module is imported on first use: its spelling, and how to import its class."""

    spelling: str
    load: Callable[[], type[RuntimeDriver]]


class Lanes(MutableMapping[str, type[RuntimeDriver]]):
    """lane name -> driver class, a deferred lane's class imported when it is first asked for."""

    def __init__(self, entries: dict[str, Union[type[RuntimeDriver], Deferred]]) -> None:
        self._entries = dict(entries)

    def __getitem__(self, lane: str) -> type[RuntimeDriver]:
        entry = self._entries[lane]
        if isinstance(entry, Deferred):
            cls = entry.load()
            if cls.lane != lane or cls.spelling != entry.spelling:
                raise TypeError(f"conformance/host/drivers/__init__.py: lane {lane!r} is registered as spelt "
                                f"{entry.spelling!r}, but {cls.__name__} says lane {cls.lane!r} spelt "
                                f"{cls.spelling!r}: make the two agree")
            self._entries[lane] = entry = cls
        return entry

    def __setitem__(self, lane: str, cls: type[RuntimeDriver]) -> None:
        self._entries[lane] = cls

    def __delitem__(self, lane: str) -> None:
        del self._entries[lane]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def spelling(self, lane: str) -> str:
        """How a ``--runtime`` value names ``lane`` (its class's ``spelling``), without importing it."""
        entry = self._entries[lane]
        return entry.spelling

    def loaded(self) -> list[type[RuntimeDriver]]:
        """The lanes' classes imported so far: a lane never imported made no driver in this process."""
        return [entry for entry in self._entries.values() if not isinstance(entry, Deferred)]


def _containerd() -> type[RuntimeDriver]:
    from .containerd import ContainerdDriver  # the engine's client: only for a containerd/NAME runtime

    return ContainerdDriver


def _rootless() -> type[RuntimeDriver]:
    from .rootless import RootlessDriver  # the unprivileged user's machinery: only for a NAME:rootless runtime

    return RootlessDriver


#: the rootless lane's name (the agent asks for the host's cgroup delegation when a runtime is in it)
ROOTLESS_LANE = "rootless"
#: lane name -> driver class
DRIVERS = Lanes({
    CliDriver.lane: CliDriver,
    "containerd": Deferred("containerd/{}", _containerd),
    ROOTLESS_LANE: Deferred("{}:rootless", _rootless),
})
#: the lane of a value no other lane's spelling claims (a runtime name or a path)
DEFAULT_LANE = CliDriver.lane

__all__ = ["DRIVERS", "ROOTLESS_LANE", "Lane", "RunOutcome", "RuntimeDriver", "VerbFailed", "describe", "label",
           "parse"]


@dataclass(frozen=True)
class Lane:
    """A ``--runtime`` value split into the lane that drives it and the runtime it names."""

    lane: str
    runtime: str  # what runtimes.resolve takes: ref, runc, crun, runsc, or a path

    @property
    def driver_class(self) -> type[RuntimeDriver]:
        return DRIVERS[self.lane]


def parse(value: str) -> Lane:
    """The lane and runtime a ``--runtime`` value names (a lane's spelling wins over a path's)."""
    for lane in DRIVERS:
        inner = unspell(DRIVERS.spelling(lane), value) if lane != DEFAULT_LANE else None
        if inner is not None:
            return Lane(lane, inner)
    return Lane(DEFAULT_LANE, value)


def label(value: str) -> str:
    """A ``--runtime`` value's column name: the runtime's label, qualified by its lane."""
    lane = parse(value)
    return lane.driver_class.qualify(runtimes.label(lane.runtime))


def describe(value: str, flags: dict[str, list[str]],
             resolved: Callable[[str], runtimes.RuntimeProfile] | None = None) -> tuple[str, RuntimeEntry]:
    """(column name, matrix ``runtimes`` entry) for a ``--runtime`` value; raises RuntimeNotFound.

    ``flags`` are ``--runtime-flags``, keyed by the runtime's own name.  ``resolved``: where the
    runtimes a session resolved are kept (``RunSession.profile``, with the same flags), so that one
    it ran is not asked again (``--version``, ``run --help``: two processes, ~8 ms for runc here).
    """
    lane = parse(value)
    profile = resolved(lane.runtime) if resolved else runtimes.resolve(lane.runtime, flags.get(lane.runtime))
    return lane.driver_class.qualify(profile.name), lane.driver_class.describe(profile)
