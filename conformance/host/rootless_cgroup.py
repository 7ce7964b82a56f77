"""cgroups as a rootless user meets them: a delegated v2 subtree, or none at all.

An unprivileged user can only place a container in a cgroup it was given.
On a pure cgroup v2 host the harness gives it one as systemd's ``Delegate=``
does for a user's service: a directory under the root (named after the
user, so a sweep finds it), owned by the user together with its
``cgroup.procs``, ``cgroup.subtree_control`` and ``cgroup.threads``, with the
controllers that the root enables for its children.  Every runtime process
of the lane starts in the leaf ``runtime/`` of that subtree (the harness,
root, moves it there before it drops to the user), so the runtime can move a
container's init from there into ``<subtree>/<id>`` — the kernel lets a
process move another between cgroups only when it may write ``cgroup.procs``
of both's common ancestor, here the delegated directory.  The container's
``cgroupsPath`` names ``/<subtree>/<id>`` (rootless_config.py).

A v1 or hybrid host delegates nothing: v1 hierarchies have no safe
delegation, and this one is not made.  The rootless lane's containers then
get no ``cgroupsPath`` — a rootless user's config names none — and each
runtime shows what it does with the limits a scenario sets.

Standard library only: the agent runs this on remote hosts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import cgroupfs

#: the files Delegate= hands over with the directory (cgroup.threads only where threaded mode exists)
DELEGATED_FILES = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")
RUNTIME_LEAF = "runtime"
#: why a rootless container has no cgroup of its own where nothing is delegated
NOT_DELEGATED = ("no cgroup is delegated to the rootless user on this cgroup v1/hybrid host: the container "
                 "stays in the caller's cgroups")


@dataclass(frozen=True)
class Delegation:
    """A cgroup v2 subtree owned by the rootless user."""

    top: Path            # the delegated directory, e.g. /sys/fs/cgroup/oci-conformance-812-1
    controllers: tuple[str, ...]   # those available in it (enabled in its parent's subtree_control)

    @property
    def runtime_procs(self) -> Path:
        """Where each runtime process of the lane is put before it runs (the leaf ``runtime/``)."""
        return self.top / RUNTIME_LEAF / "cgroup.procs"

    def cgroups_path(self, cid: str) -> str:
        """A container's ``cgroupsPath``: its own cgroup inside the subtree."""
        return f"/{self.top.name}/{cid}"

    def enter(self) -> list[str]:
        """The argv prefix (run as root) that puts the process into the runtime leaf, then execs the rest."""
        return ["sh", "-c", f'echo $$ > {self.runtime_procs} && exec "$0" "$@"']


def delegates() -> bool:
    """Whether this host delegates a subtree to the rootless lane's users (a pure cgroup v2 host)."""
    return cgroupfs.layout() == "v2"


def plan() -> str:
    """What the rootless lane gets on this host, for the host profile of the matrix."""
    mount_map = cgroupfs.mounts()
    kind = cgroupfs.layout(mount_map)
    if kind != "v2":
        return (f"not delegated: cgroup {kind} (v1 hierarchies are not delegated to an unprivileged user); "
                "rootless containers get no cgroupsPath and stay in the caller's cgroups")
    controllers = " ".join(sorted(_enabled(mount_map[""])))
    return (f"delegated: each rootless runtime's user owns a subtree of {mount_map['']} "
            f"(Delegate=-style: the directory, {', '.join(DELEGATED_FILES)}; controllers: {controllers or 'none'}); "
            "containers get cgroupsPath /<subtree>/<id>")


def delegate(name: str, uid: int, gid: int) -> Delegation | None:
    """The subtree ``name`` under the v2 root, handed to ``uid``:``gid``; None on a v1 or hybrid host."""
    mount_map = cgroupfs.mounts()
    if cgroupfs.layout(mount_map) != "v2":
        return None
    top = mount_map[""] / name
    top.mkdir()
    try:
        leaf = top / RUNTIME_LEAF
        leaf.mkdir()
        for directory in (top, leaf):
            os.chown(directory, uid, gid)
            for file in DELEGATED_FILES:
                if (directory / file).exists():
                    os.chown(directory / file, uid, gid)
    except BaseException:
        undelegate_path(top)
        raise
    return Delegation(top, tuple(sorted(_enabled(mount_map[""]))))


def undelegate(delegation: Delegation) -> list[str]:
    """Remove the subtree (killing what still runs in it); returns what was left and removed."""
    return undelegate_path(delegation.top)


def undelegate_path(top: Path) -> list[str]:
    left = [p for p in cgroupfs.remove_leftovers(f"/{top.name}") if Path(p).exists()]
    return left


def _enabled(root: Path) -> set[str]:
    try:
        return set((root / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()
