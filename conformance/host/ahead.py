"""The next scenario's bundle, written while the current scenario's container runs.

Writing a bundle is the harness's largest piece of work per scenario (~0.5-0.9 ms
here: the config, a rootfs copy taken from the spares).  The scenario after the
current one is known (pytest's ``nextitem``), and while the current container
runs the harness only waits for it (drivers/procs.py): so its bundle is written
then, as queued idle work (host/idle.py: executor._write_ahead), and the next
scenario starts from it (the session keeps it meanwhile).

Only where writing early changes nothing: a scenario with no host set-up, no
image to mount and no host fact that is read before its container exists gets
the same variables, and so the same bundle, whenever it is written.  The next
scenario uses what was written ahead only if it is its own (the same scenario,
runtime and switches) and the variables it computes itself are those the
bundle was written with; otherwise it is removed and a bundle written as
always.  One written for a scenario that never came (``-x``, Ctrl-C) goes with
the session's work dir.
"""
from __future__ import annotations

from dataclasses import dataclass

from conformance.model.scenario import Scenario

from . import hoststate
from .bundle import Bundle


@dataclass(frozen=True)
class Next:
    """The scenario a host runs after the current one, on which runtime and switches."""

    scenario: Scenario
    runtime: str
    disabled: tuple[str, ...] = ()


@dataclass
class Written:
    """A bundle written ahead: for whom, under which container id, from which variables."""

    next: Next
    cid: str
    variables: dict[str, str]
    bundle: Bundle
    used: bool = False  # taken by its scenario, which removes it as its own

    def serves(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...], variables: dict[str, str]) -> bool:
        return (self.next.scenario is scenario and self.next.runtime == runtime and self.next.disabled == disabled
                and self.variables == variables)


def can_write_ahead(scenario: Scenario) -> bool:
    return (not scenario.host_setup and scenario.image is None
            and not any(f.kind in hoststate.READ_BEFORE for f in scenario.host_facts))
