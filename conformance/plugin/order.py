"""The order items run in: the scenarios that must take time first.

With ``-n 2`` xdist hands items to whichever worker is free; a cell that
sleeps for a second (a pause held while tickers note the time, a hook left
to outlive its timeout) handed out last keeps one worker busy while the
other has nothing left.  Run first, the short cells fill in beside it: the
longest-first rule of list scheduling.

What a scenario must take is read from what it declares, never from a
measurement of an earlier run: its ``sleep`` steps, its hooks' ``timeout``
(the one hook with a timeout is there to outlive it), and one step's worth
for every other step (each is a runtime process or two).  The order is
stable otherwise (catalog order), and the same in every xdist worker, as
xdist requires.  What the entrypoint's own script sleeps is not counted: a
``sleep 1000 &`` there is a process to look at, ended long before.
"""
from __future__ import annotations

import pytest

from conformance.model.scenario import Scenario

from .items import ScenarioItem

#: what one step costs beside the container itself (a runtime process, on this project's VM)
STEP_S = 0.01


def least_seconds(scenario: Scenario) -> float:
    """The time the scenario spends by its own declaration: sleep steps, hook timeouts, other steps."""
    steps = sum(float(step["sleep"]) if isinstance(step, dict) and "sleep" in step else STEP_S
                for step in scenario.steps)
    hooks = sum(float(hook.get("timeout", 0)) for kind in (scenario.patch.get("hooks") or {}).values()
                if isinstance(kind, list) for hook in kind if isinstance(hook, dict))
    return steps + hooks


def longest_first(items: list[pytest.Item]) -> None:
    """Sort ``items`` in place, the scenarios that take longest by declaration first (stable)."""
    def cost(item: pytest.Item) -> float:
        return -least_seconds(item.scenario) if isinstance(item, ScenarioItem) else 0.0

    items.sort(key=cost)
