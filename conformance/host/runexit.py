"""What ``RUNTIME run`` itself returns: the exit status scripts and engines read.

A scenario that expects ``runtime_exit`` and runs through ``run`` has it for
free (observe.py).  One whose host facts or steps need create and start
learns the container's status by ``waitpid`` as a shim does, which says
nothing of the runtime's own: it gets one more container, the same config
under a new id, run in the foreground (executor._second_run).  A container
that ends only when killed gets the scenario's ``kill`` steps replayed on it.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from conformance.model.errors import DriverError
from conformance.model.matchers import text_failures
from conformance.model.scenario import Scenario, TextExpectation

from . import cgroupfs
from .bundle import Bundle
from .drivers import RuntimeDriver
from .steps import parse as parse_step


def run_exit(scenario: Scenario, driver: RuntimeDriver, bundle: Bundle, cid: str) -> tuple[int | None, list[str]]:
    """``RUNTIME run`` of the bundle in the foreground: (its exit status, None past the timeout; cgroups left).

    The scenario's ``kill`` steps are replayed on it (once its ``stdout``
    step before the first kill is met), so a container that waits to be
    killed ends as in the scenario.  Its output is not judged.
    """
    steps = [parse_step(s) for s in scenario.steps]
    kills = [str(arg) for verb, arg in steps if verb == "kill"]
    first_kill = next((i for i, (verb, _) in enumerate(steps) if verb == "kill"), 0)
    gate = next((arg for verb, arg in reversed(steps[:first_kill]) if verb == "stdout"), None)
    with open(bundle.path / "stdout", "wb") as out, open(bundle.path / "stderr", "wb") as err:
        killer = threading.Thread(target=_replay_kills, daemon=True,
                                  args=(driver, cid, kills, gate, bundle.path / "stdout", scenario.timeout))
        if kills:
            killer.start()
        try:
            outcome = driver.run(bundle.path, cid, out, err, scenario.timeout)
        except DriverError:
            outcome = None
        finally:
            if kills:
                killer.join()
            leaks = cgroupfs.remove_leftovers(bundle.config["linux"].get("cgroupsPath", ""))
    return (outcome.exit if outcome is not None else None), leaks


def _replay_kills(driver: RuntimeDriver, cid: str, kills: list[str], gate: Any, stdout: Path, timeout: float) -> None:
    """Send the scenario's signals to a container being run, once it printed what the scenario waits
    for (or, without such a step, once the runtime says it runs)."""
    deadline = time.monotonic() + timeout
    wanted = TextExpectation.from_yaml(gate) if gate is not None else None
    while time.monotonic() < deadline:
        if wanted is not None:
            if not text_failures(wanted, stdout.read_text(errors="replace") if stdout.exists() else "", {}):
                break
        elif _says_running(driver, cid):
            break
        time.sleep(0.01)
    for sig in kills:
        try:
            driver.kill(cid, sig)
        except DriverError:
            pass  # gone already: the run's exit says what happened


def _says_running(driver: RuntimeDriver, cid: str) -> bool:
    try:
        return driver.state(cid).get("status") == "running"
    except DriverError:
        return False
