"""Checks made inside a running container, with pytest-testinfra's modules (executor side).

A scenario's ``expect: {testinfra: [...]}`` names testinfra modules and the
attributes to read from them (``{file: /etc/passwd, user: root}``).  They
are read while the entrypoint runs, through the runtime's ``exec``
(``conformance/host/testinfra_exec.py``), and judged by ``verdict.py``.

This module is the executor's side of that and needs only the standard
library: testinfra is imported when a scenario has such checks, and it is
there wherever pytest runs.  A remote host (reached through the agent) that
has no testinfra of its own skips those scenarios, saying so.
"""
from __future__ import annotations

import importlib.util

from conformance.model.placeholders import fill
from conformance.model.records import InsideReading
from conformance.model.scenario import InsideCheck, Scenario


def unavailable(scenario: Scenario) -> str | None:
    """Why this host cannot read the scenario's testinfra checks, or None."""
    if scenario.inside_checks and importlib.util.find_spec("testinfra") is None:
        return ("host lacks testinfra: the scenario's testinfra checks run in a Python that has "
                "pytest-testinfra (always so where pytest runs; install it on this host to run them here)")
    return None


def filled(checks: tuple[InsideCheck, ...], variables: dict[str, str]) -> list[InsideCheck]:
    """The checks with ``{{placeholders}}`` in their arguments filled for this container."""
    return [InsideCheck(c.module, fill(c.argument, variables), c.expect) for c in checks]


def read(scenario: Scenario, exec_argv: list[str], cid: str,
         variables: dict[str, str]) -> list[InsideReading]:
    """Read every testinfra check of ``scenario`` inside the running container ``cid``.

    ``exec_argv`` runs a command inside it once the command's argv is appended
    (the driver's ``exec_argv``: ``RUNTIME --root ROOT exec ID``).
    """
    # testinfra is an optional dependency on a remote host: imported only when a check needs it
    from . import testinfra_exec

    try:
        host = testinfra_exec.container_host(exec_argv, cid, kept_open=True)  # one exec, not one per command
    except Exception as exc:  # the first exec failed: nothing can be read
        return not_running(scenario, f"exec into the container failed: {' '.join(str(exc).split())[:300]}")
    try:
        return testinfra_exec.read_checks(host, filled(scenario.inside_checks, variables))
    finally:
        host.backend.close()


def not_running(scenario: Scenario, why: str) -> list[InsideReading]:
    """Every reading an error: the container was not there to be asked."""
    return [InsideReading(i, attr, error=why)
            for i, check in enumerate(scenario.inside_checks) for attr, _ in check.expect]
