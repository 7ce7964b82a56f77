"""The config a rootless user would run: the scenario's, with what an unprivileged runtime needs.

This is the one place where the rootless lane changes a scenario's
config.json, and nothing else does.  Each change is a rule with a sentence
(``RULES``); the matrix lists the sentences as the lane's adaptations, and
``adapt`` returns which rules it applied to one config.

* A user namespace: an unprivileged runtime makes every other namespace from
  inside one it owns.  Container root is the user itself, and container ids
  1-65535 are the user's subordinate range, written by ``newuidmap``/
  ``newgidmap`` — what rootless Podman and Docker run, and the only maps
  beyond its own id an unprivileged user may have written (the kernel lets
  it write its own uid alone, and its own gid only once setgroups is
  denied).  The range is mapped whether or not the config names other ids:
  a scenario's commands do too (``chown 1:1``, ``su nobody``).  A user
  without ranges (``--rootless-user``) gets its own ids alone, as ``runc
  spec --rootless`` writes them, and a config naming other ids is skipped.
* A scenario's own maps keep their container ids; their host ids move into
  the user's subordinate range (the user owns no others).  The bundle's
  ``{{root_host_uid}}``/``{{root_host_gid}}`` say where container root went,
  so a scenario's host-side checks follow the map rather than a number.
* Mount options ``uid=``/``gid=`` naming an id the map does not hold are
  dropped (``runc spec --rootless`` drops them all); without a network
  namespace of its own the container gets ``/sys`` bound from the host
  (sysfs cannot be mounted then), as ``runc spec --rootless`` does, and
  without a PID namespace of its own ``/proc`` bound from the host (proc
  cannot be mounted for a PID namespace the user does not own), as rootless
  Podman does for ``--pid=host``; without an IPC namespace of its own the
  host's ``/dev/mqueue`` bound, or none where the host has none.  All three
  only where the lane added the user
  namespace: a scenario's own user namespace is the runtime's to handle,
  rootful or not.
* A scenario's own user namespace without maps is left so: a runtime must
  refuse it, rootless or not.
* cgroups: ``cgroupsPath`` is the container's cgroup in the delegated subtree
  (rootless_cgroup.py), or, where nothing is delegated, absent — the
  runtime chooses, as for any rootless user's config.  ``linux.resources``
  stay as the scenario sets them: whether a runtime then refuses or runs
  without the limit is what the cgroup scenarios show.

What cannot exist rootless is not adapted away: joining a namespace that
belongs to the host's root (a path under ``/proc``, the harness's
``bridge_net`` namespace) raises ``Unrepresentable``, and the scenario is
skipped with that reason.  So is a map larger than the user's range.

Standard library only: the agent runs this on remote hosts.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from conformance.model.errors import NotApplicable

from .rootless_cgroup import Delegation
from .rootless_user import IdRange, RootlessUser

#: rule -> what it does, in the words the matrix prints
RULES: dict[str, str] = {
    "userns": "a user namespace is added (an unprivileged runtime makes the other namespaces from inside one)",
    "sub-ids": "container uid/gid 0 map to the user's own uid/gid and 1-65535 to its subordinate ranges "
               "(newuidmap/newgidmap), as rootless Podman and Docker map them",
    "own-ids": "a user without subordinate ranges: container uid/gid 0 map to its own uid/gid, one id each "
               "(runc spec --rootless); a process.user naming other ids is skipped",
    "moved-maps": "a scenario's own uidMappings/gidMappings keep their container ids; their host ids move "
                  "into the user's subordinate range ({{root_host_uid}} names container root's host uid)",
    "mount-ids": "mount options uid=/gid= naming an id the map does not hold are dropped",
    "sysfs-bind": "without its own network namespace the container's /sys is the host's, bound read-only "
                  "(sysfs cannot be mounted there; runc spec --rootless)",
    "mqueue-host": "without its own IPC namespace the container's /dev/mqueue is the host's, bound (left out "
                   "where the host mounts none: mqueue cannot be mounted for the host's IPC namespace from a "
                   "user namespace)",
    "proc-bind": "without its own PID namespace the container's /proc is the host's, bound (proc cannot be "
                 "mounted for the host's PID namespace from a user namespace; rootless Podman's --pid=host)",
    "cgroups-delegated": "cgroupsPath is the container's cgroup in the user's delegated subtree",
    "no-cgroups-path": "no cgroupsPath where no cgroup is delegated (the runtime chooses, as for any rootless "
                       "config); linux.resources are kept as the scenario sets them",
    "runtime-userns": "no user namespace is added: the runtime makes its own (runsc --rootless)",
}

#: what the lane never offers, as a scenario's ``requires`` names it, and why (LaneNeeds.refuses)
REFUSED = {
    "initial-userns": "every container of the rootless lane runs in a user namespace of the user's, where "
                      "the kernel refuses mknod of a device node, a capability acts only on what that "
                      "namespace owns (CAP_SYS_NICE, CAP_SYS_TIME … act only in the host's), and the mounts "
                      "are locked (the host's shared mounts arrive as slaves, nothing propagates back; a "
                      "non-recursive bind of a tree with submounts is refused)",
}

MQUEUE = "/dev/mqueue"  # the host's mqueue mount, bound for a container in the host's IPC namespace
SUBORDINATE_SPAN = 65535  # container ids 1..65535 when the config names ids besides root


class Unrepresentable(NotApplicable):
    """The scenario's property needs something an unprivileged user cannot have: a skip, with why."""


@dataclass(frozen=True)
class RootlessTarget:
    """What the adaptation must know of the lane: the user, its cgroup, the runtime's own habits."""

    user: RootlessUser
    delegation: Delegation | None
    #: the runtime makes the user namespace itself (runsc --rootless): the config gets none added
    runtime_makes_userns: bool = False


def rules_for(runtime_makes_userns: bool, delegated: bool) -> list[str]:
    """The sentences of the rules that can apply to one runtime on this host (the matrix's adaptations)."""
    keys = ["runtime-userns"] if runtime_makes_userns else [
        "userns", "sub-ids", "own-ids", "moved-maps", "mount-ids", "sysfs-bind", "proc-bind", "mqueue-host"]
    keys.append("cgroups-delegated" if delegated else "no-cgroups-path")
    return [RULES[k] for k in keys]


def adapt(config: dict[str, Any], target: RootlessTarget) -> list[str]:
    """Change ``config`` (in place) into what the rootless user runs; returns the rules applied.

    Raises Unrepresentable when the scenario needs what an unprivileged user cannot have.
    """
    linux = config.setdefault("linux", {})
    _refuse_foreign_namespaces(linux)
    applied = _user_namespace(config, linux, target)
    if "runtime-userns" not in applied:  # the runtime's own namespace and its own sysfs (gVisor's kernel)
        applied += _mounts(config, linux, "userns" in applied)
    return applied + _cgroups(linux, target.delegation)


def _refuse_foreign_namespaces(linux: dict[str, Any]) -> None:
    for ns in linux.get("namespaces") or []:
        if ns.get("path"):
            raise Unrepresentable(
                f"the config joins the {ns['type']} namespace {ns['path']}, which belongs to the host's root: "
                "an unprivileged user cannot enter it (setns needs CAP_SYS_ADMIN over its owner)")


# -- the user namespace and its maps ---------------------------------------------------
def _user_namespace(config: dict[str, Any], linux: dict[str, Any], target: RootlessTarget) -> list[str]:
    namespaces = linux.setdefault("namespaces", [])
    has_userns = any(ns.get("type") == "user" for ns in namespaces)
    if target.runtime_makes_userns and not has_userns:
        return ["runtime-userns"]
    applied = [] if has_userns else ["userns"]
    if not has_userns:
        namespaces.append({"type": "user"})
    user = target.user
    if has_userns and not (linux.get("uidMappings") or linux.get("gidMappings")):
        return applied  # the scenario's own user namespace without maps: the runtime must refuse it
    if linux.get("uidMappings") or linux.get("gidMappings"):
        linux["uidMappings"] = _moved(linux.get("uidMappings") or [], user.subuids, user.name, "uid")
        linux["gidMappings"] = _moved(linux.get("gidMappings") or [], user.subgids, user.name, "gid")
        return applied + ["moved-maps"]
    named = _named_ids(config)
    if (user.subuids is None or user.subgids is None) and named <= {0}:
        linux["uidMappings"] = [{"containerID": 0, "hostID": user.uid, "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": user.gid, "size": 1}]
        return applied + ["own-ids"]
    linux["uidMappings"] = _own_and_subordinate(user.uid, user.subuids, user.name, "uid", named)
    linux["gidMappings"] = _own_and_subordinate(user.gid, user.subgids, user.name, "gid", named)
    return applied + ["sub-ids"]


def _named_ids(config: dict[str, Any]) -> set[int]:
    """Every uid or gid the config names for the container's process (0 is root); a mount's
    uid=/gid= options are the mount rule's (``_mounts``: dropped when unmapped)."""
    process_user = (config.get("process") or {}).get("user") or {}
    ids = {int(process_user.get("uid", 0)), int(process_user.get("gid", 0))}
    return ids | {int(g) for g in process_user.get("additionalGids") or []}


def _own_and_subordinate(own: int, subordinate: IdRange | None, name: str, kind: str,
                         named: set[int]) -> list[dict[str, int]]:
    if subordinate is None:
        raise Unrepresentable(f"the config names {kind}s {sorted(named - {0})} besides root, which needs subordinate "
                              f"ids; user {name} has none in /etc/sub{kind}")
    size = min(SUBORDINATE_SPAN, subordinate.count)
    if max(named) > size:
        raise Unrepresentable(f"the config names {kind} {max(named)}; user {name}'s subordinate range holds "
                              f"{subordinate.count} ids")
    return [{"containerID": 0, "hostID": own, "size": 1},
            {"containerID": 1, "hostID": subordinate.start, "size": size}]


def _moved(maps: list[dict[str, int]], subordinate: IdRange | None, name: str, kind: str) -> list[dict[str, int]]:
    """The scenario's maps with their host ids laid one after another into the user's range."""
    total = sum(int(m["size"]) for m in maps)
    if subordinate is None or total > subordinate.count:
        have = "none" if subordinate is None else f"{subordinate.count} ids"
        raise Unrepresentable(f"the config maps {total} {kind}s to host ids of its choice; a rootless user maps "
                              f"only its own and its subordinate range (user {name}: {have} in /etc/sub{kind})")
    moved, offset = [], 0
    for m in maps:
        moved.append({"containerID": int(m["containerID"]), "hostID": subordinate.start + offset,
                      "size": int(m["size"])})
        offset += int(m["size"])
    return moved


# -- mounts ---------------------------------------------------------------------------
def _mounts(config: dict[str, Any], linux: dict[str, Any], added_userns: bool) -> list[str]:
    """Mount options naming unmapped ids dropped; /sys and /proc bound where the lane's user namespace
    makes them unmountable (``added_userns``: a scenario's own user namespace is left as written)."""
    applied = []
    spans = {kind: [(int(m["containerID"]), int(m["size"])) for m in linux.get(f"{kind}Mappings") or []]
             for kind in ("uid", "gid")}
    own = {ns.get("type") for ns in linux.get("namespaces") or [] if not ns.get("path")}
    mounts = config.get("mounts") or []
    for mount in list(mounts):
        if added_userns and mount.get("type") == "mqueue" and "ipc" not in own:
            applied.append("mqueue-host")
            if not posixpath.ismount(MQUEUE):
                mounts.remove(mount)
                continue
            mount.update(type="none", source=MQUEUE, options=["rbind", "nosuid", "noexec", "nodev"])
        options = mount.get("options") or []
        kept = [o for o in options if not _names_unmapped_id(o, spans)]
        if kept != options:
            mount["options"] = kept
            applied.append("mount-ids")
        if added_userns and mount.get("type") == "sysfs" and "network" not in own:
            mount.update(type="none", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"])
            applied.append("sysfs-bind")
        if added_userns and mount.get("type") == "proc" and "pid" not in own:
            mount.update(type="none", source="/proc", options=["rbind", "nosuid", "noexec", "nodev"])
            applied.append("proc-bind")
    return list(dict.fromkeys(applied))


def _names_unmapped_id(option: str, spans: dict[str, list[tuple[int, int]]]) -> bool:
    """``uid=N``/``gid=N`` with N outside its map (a tmpfs owned by an id the namespace lacks)."""
    key, _, value = option.partition("=")
    return key in spans and value.isdigit() and not any(
        start <= int(value) < start + size for start, size in spans[key])


# -- cgroups ----------------------------------------------------------------------------
def _cgroups(linux: dict[str, Any], delegation: Delegation | None) -> list[str]:
    given = linux.get("cgroupsPath")
    if delegation is None:
        if given is not None:
            del linux["cgroupsPath"]
        return ["no-cgroups-path"]
    if given:
        linux["cgroupsPath"] = delegation.cgroups_path(posixpath.basename(given.rstrip("/")))
    return ["cgroups-delegated"]
