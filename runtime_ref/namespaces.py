"""Phase: namespaces — what the container can see.

A namespace the spec lists without a ``path`` is created: all of them in the
single ``clone`` that starts the init, so that they are born together (and
owned by the new user namespace when there is one), except two that only
take effect for the *children* of whoever unshares them or must be set up
before their first member exists:

* ``time``: we unshare it in the runtime just before clone and write
  ``/proc/self/timens_offsets`` (allowed only while the namespace is still
  empty), so the init is born in it with the offsets in place (rootless
  with a new user namespace, a child of ours does it inside that user
  namespace, the only one where we hold CAP_SYS_ADMIN: spawn._Holder);
* ``cgroup``: the init unshares it itself *after* being placed in its cgroup,
  so that its own cgroup becomes the root of its view (``/proc/self/cgroup``
  reads ``/``).

A namespace with a ``path`` is joined with setns: the user namespace first
(it grants the capabilities needed to join the others), the mount namespace
last.  pid and time namespaces are joined by the runtime before clone, since
setns on them only affects later children.
"""
from __future__ import annotations

import os

from . import linux as L
from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .hints import Config, Namespaces

CLONE_FLAG = {
    "pid": L.CLONE_NEWPID, "network": L.CLONE_NEWNET, "mount": L.CLONE_NEWNS,
    "uts": L.CLONE_NEWUTS, "ipc": L.CLONE_NEWIPC, "user": L.CLONE_NEWUSER,
    "cgroup": L.CLONE_NEWCGROUP, "time": L.CLONE_NEWTIME,
}
PROC_NAME = {"pid": "pid", "network": "net", "mount": "mnt", "uts": "uts", "ipc": "ipc",
             "user": "user", "cgroup": "cgroup", "time": "time"}
JOIN_ORDER = ["user", "ipc", "uts", "network", "cgroup", "mount"]


def clone_flags(nss: Namespaces) -> int:
    """Flags for the init's clone: every namespace to create except time and cgroup."""
    flags = 0
    for t, path in nss.items():
        if path is None and t not in ("time", "cgroup"):
            flags |= CLONE_FLAG[t]
    return flags


def open_joins(nss: Namespaces, check_type: bool = True) -> dict[str, int]:
    """Open every namespace path to join: {type: fd}.  Errors name the path.

    A path that names a namespace of another type is refused here, before
    any process exists (setns would refuse it too, later, in the init).
    Switch ``ns-path-type`` (``check_type=False``): not checked.
    """
    fds: dict[str, int] = {}
    try:
        for t, path in nss.items():
            if path is not None:
                try:
                    fds[t] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise Error("linux.namespaces: cannot open %s namespace %s: %s"
                                % (t, path, e.strerror)) from None
                if check_type:
                    _check_type(t, path, fds[t])
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


#: ioctl(2) on a namespace fd: its CLONE_NEW* type (Linux 4.11)
NS_GET_NSTYPE = 0xB703


def _check_type(t: str, path: str, fd: int) -> None:
    """The namespace open at ``fd`` is of type ``t`` (asked of the kernel: a path under
    /run/netns reads as that path, not as "net:[inode]")."""
    try:
        kind = L.ioctl(fd, NS_GET_NSTYPE)[0]
    except OSError as e:
        raise Error("linux.namespaces: the %s namespace path %s is not a namespace (%s)"
                    % (t, path, os.strerror(e.errno or 0))) from None
    if kind != CLONE_FLAG[t]:
        named = next((n for n, flag in CLONE_FLAG.items() if flag == kind), "unknown")
        raise Error("linux.namespaces: the %s namespace path %s names a namespace of type %s" % (t, path, named))


def before_clone(nss: Namespaces, fds: dict[str, int], config: Config) -> list[tuple[int, int]]:
    """Runtime-side steps that shape the init's birth: pid/time joins, a new time ns.

    Returns a list of fds to restore our own namespaces with ``after_clone``.
    """
    restore = []
    for t in ("pid", "time"):
        if t in fds:
            restore.append((os.open("/proc/self/ns/%s" % PROC_NAME[t], os.O_RDONLY | os.O_CLOEXEC),
                            CLONE_FLAG[t]))
            L.setns(fds[t], CLONE_FLAG[t])
    if "time" in nss and nss["time"] is None:
        restore.append((os.open("/proc/self/ns/time", os.O_RDONLY | os.O_CLOEXEC), L.CLONE_NEWTIME))
        new_time(config)
    # (switch "time", or no time namespace: linux.timeOffsets is not applied)
    return restore


def new_time(config: Config) -> None:
    """Unshare a time namespace for our children and write its offsets (allowed while it is empty)."""
    try:
        L.unshare(L.CLONE_NEWTIME)
    except OSError as e:
        raise Error("cannot make the time namespace: %s" % e.strerror) from None
    offsets = (config.get("linux") or {}).get("timeOffsets") or {}
    for clock in ("monotonic", "boottime"):
        o = offsets.get(clock)
        if o:
            with open("/proc/self/timens_offsets", "w") as f:
                f.write("%s %d %d" % (clock, o.get("secs", 0), o.get("nanosecs", 0)))


def after_clone(restore: list[tuple[int, int]]) -> None:
    """Back into the namespaces ``before_clone`` took us out of."""
    for fd, flag in restore:
        L.setns(fd, flag)
        os.close(fd)


def join(fds: dict[str, int], typed: bool = True) -> None:
    """In the init and in exec: setns into every namespace given by path (user first, mount last).

    ``typed=False`` (switch ``ns-path-type``): setns with nstype 0, which joins whatever the fd is.
    """
    for t in JOIN_ORDER:
        if t in fds:
            L.setns(fds[t], CLONE_FLAG[t] if typed else 0)


def write_id_maps(pid: int, config: Config) -> None:
    """Write the user namespace's uid/gid maps from the parent.

    As root, straight into /proc/<pid>/{uid,gid}_map.  As an unprivileged
    user (rootless) the kernel lets a process write one line only, mapping its
    own euid (and, after ``deny`` in /proc/<pid>/setgroups, its own egid);
    any other map is written by the setuid helpers newuidmap/newgidmap, which
    check it against the user's ranges in /etc/subuid and /etc/subgid.
    """
    linux = config.get("linux") or {}
    for kind in ("uid", "gid"):
        maps = linux.get(kind + "Mappings") or []
        if not maps:
            raise Error("linux.%sMappings is required with a new user namespace" % kind)
        own = os.geteuid() if kind == "uid" else os.getegid()
        if os.geteuid() == 0 or [(m["hostID"], m["size"]) for m in maps] == [(own, 1)]:
            _write_map(pid, kind, maps)
        else:
            _helper_map(pid, kind, maps)


def _write_map(pid: int, kind: str, maps: list[dict[str, int]]) -> None:
    text = "".join("%d %d %d\n" % (m["containerID"], m["hostID"], m["size"]) for m in maps)
    try:
        if kind == "gid" and os.geteuid() != 0:  # rootless: gid_map only once setgroups is denied
            with open("/proc/%d/setgroups" % pid, "w") as f:
                f.write("deny")
        with open("/proc/%d/%s_map" % (pid, kind), "w") as f:
            f.write(text)
    except OSError as e:
        raise Error("cannot write %s_map %r: %s" % (kind, text, e.strerror)) from None


def _helper_map(pid: int, kind: str, maps: list[dict[str, int]]) -> None:
    """newuidmap/newgidmap PID CONTAINER HOST SIZE …: the rootless way to a map of several ids."""
    import subprocess
    argv = ["new%smap" % kind, str(pid)] + [str(m[k]) for m in maps for k in ("containerID", "hostID", "size")]
    try:
        done = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        raise Error("cannot write %s_map as uid %d: %s is not installed (Debian's uidmap)"
                    % (kind, os.geteuid(), argv[0])) from None
    if done.returncode != 0:
        raise Error("cannot write %s_map as uid %d: %s: %s"
                    % (kind, os.geteuid(), " ".join(argv), (done.stderr or done.stdout).strip()))
