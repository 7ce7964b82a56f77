"""Switches that make runtime-ref ignore part of config.json, applied to the config once, at create.

A runtime that does not implement a field behaves as if the field were
absent, or as if it said what that runtime does anyway; that is the
negative control of a scenario about the field.  Played here, on the config
``create`` has just loaded, the phases stay free of switch tests, and each
switch is exactly "the field is not there" (the config.json kept in the state
directory is the one the bundle holds).
"""
from __future__ import annotations

from .rootfs import _PROPAGATION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .hints import Config, Switches

#: what a mount keeps under switch ``mount-options`` (the kind of mount, and its propagation)
_KEPT_BY_MOUNT_OPTIONS = {"bind", "rbind", *_PROPAGATION}
#: the namespaces switch ``force-namespaces`` creates when the config leaves them out
FORCED_NAMESPACES = ("pid", "network", "ipc", "uts", "cgroup")


def apply(config: Config, disabled: Switches) -> None:
    """Change ``config`` in place as each switch in ``disabled`` says (see spec.SWITCHES)."""
    linux = config.setdefault("linux", {})
    if "terminal" in disabled:
        config["process"]["terminal"] = False
    if "console-size" in disabled:
        config["process"].pop("consoleSize", None)
    if "sysctl" in disabled:
        linux.pop("sysctl", None)
    if "device-nodes" in disabled:
        linux.pop("devices", None)
    if "device-rules" in disabled and (linux.get("resources") or {}).get("devices") is not None:
        linux["resources"]["devices"] = [{"allow": False, "access": "rwm"}]  # deny all, then our defaults
    if "rootfs-propagation" in disabled:
        linux["rootfsPropagation"] = "rprivate"
    if "rootfs-shared" in disabled:
        linux["rootfsPropagation"] = "shared"
    mounts = config.get("mounts") or []
    for m in mounts:
        options = m.get("options") or []
        if "mount-propagation" in disabled:
            options = [o for o in options if o not in _PROPAGATION]
        if "mount-options" in disabled:
            options = [o for o in options if o in _KEPT_BY_MOUNT_OPTIONS]
        if "rbind" in disabled:
            options = ["bind" if o == "rbind" else o for o in options]
        if "options" in m:
            m["options"] = options
    if "mount-order" in disabled:
        config["mounts"] = list(reversed(mounts))
    if "force-namespaces" in disabled:
        have = {ns.get("type") for ns in linux.get("namespaces") or []}
        linux["namespaces"] = list(linux.get("namespaces") or []) + [
            {"type": t} for t in FORCED_NAMESPACES if t not in have]
