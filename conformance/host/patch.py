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
    """Return ``base`` with ``patch`` applied; neither argument is modified."""
    if _is_list_op(patch):
        return _apply_list_op(base, patch, where)
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_patch(out.get(key), value, f"{where}.{key}")
    return out
