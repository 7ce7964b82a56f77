"""The one exception type the runtime raises for a user-facing failure.

The CLI prints its message as a single line (``runtime-ref: <message>``) and
exits with ``status`` (1, as runc does for almost everything); anything else
is a bug and keeps its traceback.
"""
from __future__ import annotations


class Error(Exception):
    """A failure a user can act on; ``str()`` is the whole message."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
