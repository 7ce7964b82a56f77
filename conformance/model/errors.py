"""Errors the harness reports to users: each says where and what to do."""
from __future__ import annotations


class ConformanceError(Exception):
    """Base class: a problem a user can act on (bad input, missing runtime, host fault)."""


class ScenarioError(ConformanceError):
    """A scenario file is malformed; names the file and the line."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path, self.line, self.message = path, line, message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {message}")


class RuntimeNotFound(ConformanceError):
    """--runtime names something that is neither a known runtime nor an executable."""


class DriverError(ConformanceError):
    """The runtime CLI failed where the harness needed it to succeed (create, state, …)."""


class NotApplicable(ConformanceError):
    """The scenario cannot run in this lane or on this host (the rootless lane cannot join a
    namespace of root's, the host lets no unprivileged user make a user namespace): a skip with
    the reason, never a runtime's fault."""
