"""The ``update`` verb: change the limits of a running (or created, or paused) container.

runc's flags each name one field of ``linux.resources``; ``--resources FILE``
(``-`` for stdin) gives the object whole, and flags given too win over it.
The result is checked against the same table as config.json (spec.py), so a
field runtime-ref does not implement is refused by name, then written by the
same code that wrote the limits at create (cgroups.set_limits, v1 and v2).
The container's switches still hold: under ``memory`` or ``pids`` those
limits are not written, now as at create.
"""
from __future__ import annotations

from . import cgroups, spec
from .errors import Error
from .state import Container

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List

    from .hints import Switches

#: flag -> (resource group, field, how to read the value)
_FIELDS = {
    "--memory": ("memory", "limit", int), "--memory-swap": ("memory", "swap", int),
    "--memory-reservation": ("memory", "reservation", int), "--pids-limit": ("pids", "limit", int),
    "--cpu-quota": ("cpu", "quota", int), "--cpu-period": ("cpu", "period", int),
    "--cpu-share": ("cpu", "shares", int), "--cpuset-cpus": ("cpu", "cpus", str),
    "--cpuset-mems": ("cpu", "mems", str), "--blkio-weight": ("blockIO", "weight", int),
}


def _from_file(path: str) -> dict[str, Any]:
    from .jsonfast import loads
    try:
        if path == "-":
            import sys
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                raw = f.read()
        res = loads(raw)
    except (OSError, ValueError) as e:
        raise Error("--resources %s: %s" % (path, e)) from None
    if not isinstance(res, dict):
        raise Error("--resources %s: must hold a linux.resources object" % path)
    return res


def resources(opts: Dict[str, List[str]]) -> dict[str, Any]:
    """``linux.resources`` as the flags describe it (validated, unknown fields refused)."""
    given = opts.get("--resources")
    res = _from_file(given[-1]) if given else {}
    for flag, (group, key, kind) in _FIELDS.items():
        if flag in opts:
            value = opts[flag][-1]
            try:
                res.setdefault(group, {})[key] = kind(value)
            except ValueError:
                raise Error("invalid value %r for %s" % (value, flag)) from None
    spec.check_resources(res)
    for name in ("devices", "unified", "hugepageLimits"):  # runc's update takes none of these either
        if res.get(name):
            raise Error("update of linux.resources.%s is not supported by runtime-ref" % name)
    return res


def update(root: str, cid: str, opts: Dict[str, List[str]], disabled: Switches) -> None:
    """Write the new limits into the container's cgroups."""
    c = Container.load(root, cid)
    if c.status() == "stopped":
        raise Error('container "%s" is not running' % cid)
    res = resources(opts)
    if not res:
        raise Error("update: nothing to change (give --memory, --pids-limit, ... or --resources)")
    switches = set(disabled) | set(c.data.get("disabled") or [])
    if "update" in switches:
        return  # the control: a runtime whose update changes nothing
    cgroups.set_limits(c.data["cgroups"], res, switches)
