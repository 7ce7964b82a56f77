"""Runtime drivers, registered by lane: which class drives a ``--runtime`` value.

As pytest-testinfra's ``BACKENDS`` maps a connection type (``ssh``,
``docker`` …) to its backend class, ``DRIVERS`` maps a lane's name to its
driver class.  Each class says how a ``--runtime`` value spells its lane
(``RuntimeDriver.spelling``), so ``parse`` needs no table of its own: adding
the containerd or the rootless lane is one class and one entry here.
``tests/test_drivers.py`` checks every entry against the interface
(``base.py``).

    parse("runc")            -> Lane("bare", "runc")
    parse("/opt/my-runc")    -> Lane("bare", "/opt/my-runc")
    parse("containerd/runc") -> Lane("containerd", "runc")
    parse("runc:rootless")   -> Lane("rootless", "runc")
"""
from __future__ import annotations

from dataclasses import dataclass

from conformance.model.records import RuntimeEntry

from .. import runtimes
from .base import RunOutcome, RuntimeDriver, VerbFailed
from .cli import CliDriver
from .containerd import ContainerdDriver
from .rootless import RootlessDriver

#: lane name -> driver class
DRIVERS: dict[str, type[RuntimeDriver]] = {
    CliDriver.lane: CliDriver,
    ContainerdDriver.lane: ContainerdDriver,
    RootlessDriver.lane: RootlessDriver,
}
#: the lane of a value no other lane's spelling claims (a runtime name or a path)
DEFAULT_LANE = CliDriver.lane

__all__ = ["DRIVERS", "Lane", "RootlessDriver", "RunOutcome", "RuntimeDriver", "VerbFailed", "describe", "label",
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
    for lane, cls in DRIVERS.items():
        inner = cls.unqualify(value) if lane != DEFAULT_LANE else None
        if inner is not None:
            return Lane(lane, inner)
    return Lane(DEFAULT_LANE, value)


def label(value: str) -> str:
    """A ``--runtime`` value's column name: the runtime's label, qualified by its lane."""
    lane = parse(value)
    return lane.driver_class.qualify(runtimes.label(lane.runtime))


def describe(value: str, flags: dict[str, list[str]]) -> tuple[str, RuntimeEntry]:
    """(column name, matrix ``runtimes`` entry) for a ``--runtime`` value; raises RuntimeNotFound.

    ``flags`` are ``--runtime-flags``, keyed by the runtime's own name.
    """
    lane = parse(value)
    profile = runtimes.resolve(lane.runtime, flags.get(lane.runtime))
    return lane.driver_class.qualify(profile.name), lane.driver_class.describe(profile)
