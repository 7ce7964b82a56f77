"""Patch semantics: how a scenario's ``patch`` changes the base config.json.

JSON Merge Patch (RFC 7386) plus two list operators, because OCI configs are
full of lists (namespaces, mounts, capabilities) that a scenario wants to
extend or trim rather than restate:

* mapping over mapping: merged key by key, recursively;
* ``null``: deletes the key;
* ``{"$append": [...]}``: the base list plus these items;
* ``{"$remove": [...]}``: the base list without the items equal to these;
* anything else (scalars, plain lists): replaces the base value.
"""
from __future__ import annotations

import copy
import json
from typing import Any

from conformance.model.errors import ConformanceError

LIST_OPS = ("$append", "$remove")


class PatchError(ConformanceError, ValueError):
    """A patch cannot apply (e.g. $append onto something that is not a list)."""


def _is_list_op(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= set(LIST_OPS)


def _apply_list_op(base: Any, op: dict[str, list[Any]], where: str) -> list[Any]:
    if base is None:
        base = []
    if not isinstance(base, list):
        raise PatchError(f"{where}: $append/$remove need a list in the base config, found {type(base).__name__}")
    missing = [item for item in op.get("$remove", []) if item not in base]
    if missing:
        raise PatchError(f"{where}: $remove of items not in the base config: {missing!r}")
    out = [item for item in base if item not in op.get("$remove", [])]
    return out + copy.deepcopy(op.get("$append", []))


def apply_patch(base: Any, patch: Any, where: str = "config") -> Any:
    """Return ``base`` with ``patch`` applied; neither argument is modified.

    ``base`` is copied once, then merged into in place: copying it again at
    each level (as a recursion of "return a modified copy" does) copied the
    base config — Docker's seccomp profile and all — several times per bundle.
    """
    return patch_into(_copy(base), patch, where)


def patch_into(owned: Any, patch: Any, where: str = "config") -> Any:
    """``owned`` — a document no one else holds, such as base_spec()'s fresh copy — with ``patch``
    merged into it in place (apply_patch without its copy: a bundle's config was copied twice)."""
    return _merge(owned, patch, where)


def _copy(value: Any) -> Any:
    """A deep copy of a JSON document, through the C JSON codec (several times faster than
    copy.deepcopy); anything JSON cannot carry unchanged (a tuple, a non-string key) by deepcopy."""
    try:
        text = json.dumps(value, allow_nan=False, default=_not_json)
    except (TypeError, ValueError):
        return copy.deepcopy(value)
    copied = json.loads(text)
    return copied if copied == value else copy.deepcopy(value)


def _not_json(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def _merge(owned: Any, patch: Any, where: str) -> Any:
    """``patch`` merged into ``owned`` (a copy no one else holds, changed in place)."""
    if _is_list_op(patch):
        return _apply_list_op(owned, patch, where)
    if not isinstance(patch, dict) or not isinstance(owned, dict):
        return copy.deepcopy(patch)
    for key, value in patch.items():
        if value is None:
            owned.pop(key, None)
        else:
            owned[key] = _merge(owned.get(key), value, f"{where}.{key}")
    return owned
