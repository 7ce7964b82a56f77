"""The one exception type the runtime raises for a user-facing failure.

The CLI prints its message as a single line (``runtime-ref: <message>``) and
exits non-zero; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class Error(Exception):
    """A failure a user can act on; ``str()`` is the whole message."""
