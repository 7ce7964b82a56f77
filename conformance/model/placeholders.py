"""Placeholders: ``{{name}}`` in a scenario, filled per container.

A scenario's command, patch and expected texts may name things that exist
only once its container does: where the rootfs lives, the container id, what
the host setup made (a marker file, a shm key), an image's layer dirs.  The
bundle gathers the values; this fills them in, and names every placeholder it
does not know.
"""
from __future__ import annotations

import re
from typing import Any

from .errors import ConformanceError

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_][a-z0-9_]*)\s*\}\}")  # {{layer_1}} too


class TemplateError(ConformanceError, KeyError):
    pass


def fill(value: Any, variables: dict[str, str]) -> Any:
    """Replace ``{{name}}`` in every string inside ``value`` (dicts and lists too)."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in variables:
                raise TemplateError(f"unknown placeholder {{{{{m.group(1)}}}}} (known: {', '.join(sorted(variables))})")
            return variables[m.group(1)]
        return _PLACEHOLDER.sub(sub, value)
    if isinstance(value, dict):
        return {k: fill(v, variables) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(fill(v, variables) for v in value)
    return value


def named(value: Any, name: str) -> bool:
    """Whether ``{{name}}`` appears in any string inside ``value`` (a scenario's document): a
    placeholder only one path fills (``{{init_pid}}``, create's pid) decides the path."""
    if isinstance(value, str):
        return any(m.group(1) == name for m in _PLACEHOLDER.finditer(value))
    if isinstance(value, dict):
        return any(named(v, name) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(named(v, name) for v in value)
    return False
