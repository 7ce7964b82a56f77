"""Phase: the container's filesystem view.

In order: stop mount events leaking back to the host (make ``/`` rslave or
what ``linux.rootfsPropagation`` says), bind the rootfs onto itself so it is
a mount point, mount every ``mounts`` entry inside it, populate ``/dev`` with
the few device nodes a process expects, then ``pivot_root`` into it and
detach the old root, so that nothing of the host's tree stays reachable.
Masked paths, read-only paths and the read-only root come after the pivot,
because they are container paths (they would otherwise hit the host).

Without a mount namespace (switch ``mnt``) every mount lands in the host's
namespace: they all live under the rootfs directory, and ``delete`` unmounts
whatever is mounted under it (see ``umount_under``).
"""
from __future__ import annotations

import os
import stat

from . import linux as L
from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable

    from .hints import Config, InitContext, Switches

_FLAGS = {  # option -> (set?, flag)
    "ro": (True, L.MS_RDONLY), "rw": (False, L.MS_RDONLY),
    "nosuid": (True, L.MS_NOSUID), "suid": (False, L.MS_NOSUID),
    "nodev": (True, L.MS_NODEV), "dev": (False, L.MS_NODEV),
    "noexec": (True, L.MS_NOEXEC), "exec": (False, L.MS_NOEXEC),
    "sync": (True, L.MS_SYNCHRONOUS), "async": (False, L.MS_SYNCHRONOUS),
    "dirsync": (True, L.MS_DIRSYNC), "remount": (True, L.MS_REMOUNT),
    "mand": (True, L.MS_MANDLOCK), "nomand": (False, L.MS_MANDLOCK),
    "noatime": (True, L.MS_NOATIME), "atime": (False, L.MS_NOATIME),
    "nodiratime": (True, L.MS_NODIRATIME), "diratime": (False, L.MS_NODIRATIME),
    "bind": (True, L.MS_BIND), "rbind": (True, L.MS_BIND | L.MS_REC),
    "relatime": (True, L.MS_RELATIME), "norelatime": (False, L.MS_RELATIME),
    "strictatime": (True, L.MS_STRICTATIME), "nostrictatime": (False, L.MS_STRICTATIME),
    "lazytime": (True, L.MS_LAZYTIME), "nolazytime": (False, L.MS_LAZYTIME),
    "nosymfollow": (True, L.MS_NOSYMFOLLOW), "symfollow": (False, L.MS_NOSYMFOLLOW),
    "silent": (True, L.MS_SILENT), "loud": (False, L.MS_SILENT), "defaults": (True, 0),
}
_PROPAGATION = {
    "private": L.MS_PRIVATE, "rprivate": L.MS_PRIVATE | L.MS_REC,
    "shared": L.MS_SHARED, "rshared": L.MS_SHARED | L.MS_REC,
    "slave": L.MS_SLAVE, "rslave": L.MS_SLAVE | L.MS_REC,
    "unbindable": L.MS_UNBINDABLE, "runbindable": L.MS_UNBINDABLE | L.MS_REC,
}
#: flags a remount must keep, or the kernel refuses it inside a user namespace
_LOCKED = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC | L.MS_NOATIME | L.MS_NODIRATIME | L.MS_RELATIME

DEFAULT_DEVICES = [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7),
                   ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]


def parse_options(options: list[str] | None) -> tuple[int, list[int], str]:
    """Mount options -> (flags, propagation flags, data string)."""
    flags = 0
    prop: list[int] = []
    data: list[str] = []
    for opt in options or []:
        if opt in _FLAGS:
            on, bit = _FLAGS[opt]
            flags = flags | bit if on else flags & ~bit
        elif opt in _PROPAGATION:
            prop.append(_PROPAGATION[opt])
        elif opt in ("tmpcopyup", "idmap", "ridmap"):
            raise Error("unsupported mount option %r" % opt)
        else:
            data.append(opt)
    return flags, prop, ",".join(data)


def in_root(root: str, path: str) -> str:
    """Resolve ``path`` inside ``root`` the way the container would see it.

    Symlinks are followed but never out of ``root`` (an absolute link is
    relative to ``root``, ``..`` stops at it), so a hostile rootfs cannot make
    us mount over a host path.
    """
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        cur = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(cur)
        except OSError:
            resolved.append(part)
            continue
        links += 1
        if links > 40:
            raise Error("too many symlinks resolving %s in the rootfs" % path)
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p] + parts
    return os.path.join(root, *resolved)


def _resolve(rootfs: str, path: str, ctx: InitContext) -> str:
    """A container path on the host: ``in_root``; switch ``securejoin``: the host's own resolution,
    which follows a symlink of the rootfs wherever it points (the bug securejoin exists to prevent)."""
    if "securejoin" in ctx["disabled"]:
        return os.path.realpath(rootfs + "/" + path.lstrip("/"))
    return in_root(rootfs, path)


def _mkdir_p(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        pass


def _touch(path: str) -> None:
    _mkdir_p(os.path.dirname(path))
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))


def _rbind_fallback(source: str, dest: str, flags: int) -> None:
    """Inside a user namespace some filesystems cannot be mounted afresh."""
    L.mount(source, dest, None, L.MS_BIND | L.MS_REC)
    if flags & ~(L.MS_BIND | L.MS_REC):
        _remount(dest, flags)


def _remount(dest: str, flags: int) -> None:
    """Change a bind mount's flags, keeping those the kernel locks in a user namespace."""
    locked = os.statvfs(dest).f_flag & _LOCKED
    L.mount(None, dest, None, L.MS_BIND | L.MS_REMOUNT | locked | (flags & ~(L.MS_BIND | L.MS_REC)))


def mount_one(m: dict[str, Any], rootfs: str, bundle: str, ctx: InitContext) -> None:
    """Mount one ``mounts`` entry under ``rootfs``."""
    mtype = m.get("type") or ""
    flags, prop, data = parse_options(m.get("options"))
    src = m.get("source") or mtype or "none"
    dest = _resolve(rootfs, m["destination"], ctx)
    if flags & L.MS_BIND or mtype == "bind":
        flags |= L.MS_BIND
        if not src.startswith("/"):
            src = os.path.join(bundle, src)
        if os.path.isdir(src):
            _mkdir_p(dest)
        else:
            _touch(dest)
            if "bind-nondir" in ctx["disabled"]:
                _copy_instead(src, dest)
                return
        L.mount(src, dest, None, flags & (L.MS_BIND | L.MS_REC))
        if flags & ~(L.MS_BIND | L.MS_REC):
            _remount(dest, flags)
    elif mtype == "cgroup":
        _mkdir_p(dest)
        _mount_cgroup(dest, flags, ctx)
    else:
        if mtype == "tmpfs" and "tmpfs-mode" not in ctx["disabled"]:
            data = _tmpfs_mode(data, dest)
        _mkdir_p(dest)
        if mtype == "overlay":
            data = _overlay_data(data, bundle)
        try:
            L.mount(src, dest, mtype, flags, data or None)
        except OSError as e:
            if e.errno == 1 and ctx.get("userns") and mtype in ("sysfs", "mqueue"):
                # a user namespace that does not own the network (or IPC) namespace may not mount
                # sysfs (mqueue) afresh: bind the host's instead, as crun does
                if "sysfs-fallback" in ctx["disabled"]:
                    return  # switch: /sys stays what the rootfs has there
                _rbind_fallback("/sys" if mtype == "sysfs" else "/dev/mqueue", dest, flags)
            else:
                raise
    for p in prop:
        L.mount(None, dest, None, p)


def _tmpfs_mode(data: str, dest: str) -> str:
    """A tmpfs without ``mode=`` over an existing directory takes that directory's mode.

    The spec leaves it open; runc does so (the image's mode of a directory
    such as /run or /var/tmp survives a tmpfs mounted on it), and crun since
    1.9.  Without it the kernel's 1777 would open a 0700 directory to all.
    Switch ``tmpfs-mode``: not done.
    """
    if any(opt.startswith("mode=") for opt in data.split(",")):
        return data
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        return data
    if not stat.S_ISDIR(st.st_mode):
        return data
    return ",".join(filter(None, [data, "mode=%o" % stat.S_IMODE(st.st_mode)]))


def _copy_instead(src: str, dest: str) -> None:
    """Switch ``bind-nondir``: a bind source that is not a directory becomes a regular file with the
    source's bytes (none for a fifo or socket), as a runtime that copies what it cannot bind."""
    if stat.S_ISREG(os.stat(src).st_mode):
        with open(src, "rb") as f, open(dest, "wb") as out:
            out.write(f.read())


def _overlay_data(data: str, bundle: str) -> str:
    """lowerdir/upperdir/workdir relative to the bundle become absolute."""
    out = []
    for opt in data.split(","):
        key, _, val = opt.partition("=")
        if key in ("lowerdir", "upperdir", "workdir") and val:
            val = ":".join(v if v.startswith("/") else os.path.join(bundle, v) for v in val.split(":"))
            opt = key + "=" + val
        out.append(opt)
    return ",".join(out)


def _mount_cgroup(dest: str, flags: int, ctx: InitContext) -> None:
    """The container's cgroup view at ``dest`` (usually /sys/fs/cgroup).

    In a cgroup namespace a fresh cgroup mount is rooted at the container's
    own cgroup.  Without one we bind the container's own directories (the
    ones it was placed in, whether the config named them or we chose them),
    so it sees its own limits and never the machine's other cgroups, its
    siblings' included.  Read-only unless the mount's options say ``rw``.
    Switch ``cgroup-view``: the hierarchy roots are bound instead, read-write.
    """
    from . import cgroups
    version, mounts = cgroups.detect()
    leak = "cgroup-view" in ctx["disabled"]
    own = {} if leak else cgroups.own_dirs(ctx["cgroups"])
    sub_flags = L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC | (0 if leak else flags & L.MS_RDONLY)
    if version == "v2":
        if ctx.get("cgroupns"):
            L.mount("cgroup2", dest, "cgroup2", sub_flags)
        else:
            L.mount(own.get(mounts[""], mounts[""]), dest, None, L.MS_BIND | L.MS_REC)
            _remount(dest, sub_flags)
        return
    L.mount("tmpfs", dest, "tmpfs", L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC, "mode=755")
    for mnt, ctrl in {m: c for c, m in mounts.items()}.items():  # one mount per hierarchy
        sub = os.path.join(dest, os.path.basename(mnt))
        _mkdir_p(sub)
        if ctx.get("cgroupns"):
            L.mount("cgroup", sub, "cgroup", sub_flags, ctrl)
        else:
            L.mount(own.get(mnt, mnt), sub, None, L.MS_BIND | L.MS_REC)
            _remount(sub, sub_flags)
    if flags & L.MS_RDONLY and not leak:
        L.mount(None, dest, None, L.MS_REMOUNT | L.MS_RDONLY | L.MS_NOSUID | L.MS_NODEV | L.MS_NOEXEC)


def _make_node(path: str, kind: int, major: int, minor: int, mode: int, uid: int, gid: int,
               userns: bool) -> None:
    """mknod a device node (in a user namespace: bind the host's instead)."""
    if os.path.lexists(path):
        return
    if userns:
        # mknod is refused in a user namespace: bind the host's node instead
        _touch(path)
        host = "/dev/" + os.path.basename(path)
        L.mount(host, path, None, L.MS_BIND)
        return
    os.mknod(path, mode | kind, os.makedev(major, minor))
    os.chmod(path, mode)
    os.chown(path, uid, gid)


def setup_dev(rootfs: str, config: Config, ctx: InitContext, all_host_devices: bool = False) -> None:
    """Default device nodes, spec devices, and the /dev/fd-style symlinks."""
    dev = _resolve(rootfs, "/dev", ctx)
    _mkdir_p(dev)
    userns = bool(ctx.get("userns"))
    old = os.umask(0)
    try:
        nodes = [(n, stat.S_IFCHR, ma, mi, 0o666) for n, ma, mi in DEFAULT_DEVICES]
        if all_host_devices:
            # switch "devices": the container sees every host device node
            for e in os.scandir("/dev"):
                st = e.stat(follow_symlinks=False)
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                    nodes.append((e.name, stat.S_IFMT(st.st_mode), os.major(st.st_rdev),
                                  os.minor(st.st_rdev), stat.S_IMODE(st.st_mode)))
        for name, kind, ma, mi, mode in nodes:
            _make_node(os.path.join(dev, name), kind, ma, mi, mode, 0, 0, userns)
        kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
        for d in (config.get("linux") or {}).get("devices") or []:
            path = _resolve(rootfs, d["path"], ctx)
            _mkdir_p(os.path.dirname(path))
            if os.path.lexists(path):
                os.unlink(path)
            _make_node(path, kinds[d["type"]], d.get("major", 0), d.get("minor", 0),
                       d.get("fileMode", 0o666) & 0o7777, d.get("uid", 0), d.get("gid", 0), userns)
    finally:
        os.umask(old)
    links = [("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"),
             ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr")]
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "core"))
    if os.path.isdir(os.path.join(dev, "pts")):
        links.append(("pts/ptmx", "ptmx"))
    if "dev-symlinks" in ctx["disabled"]:
        links = []  # switch "dev-symlinks": none of the spec's default /dev symlinks
    for target, name in links:
        p = os.path.join(dev, name)
        if not os.path.lexists(p):
            os.symlink(target, p)


def prepare(config: Config, bundle: str, disabled: Switches, ctx: InitContext) -> str:
    """Everything up to (not including) the pivot; returns the rootfs path."""
    rootfs = os.path.realpath(os.path.join(bundle, config["root"]["path"]))
    if not os.path.isdir(rootfs):
        raise Error("root.path %s is not a directory" % rootfs)
    linux = config.get("linux") or {}
    if ctx["mntns"]:
        prop = linux.get("rootfsPropagation") or "rslave"
        if prop not in _PROPAGATION:
            raise Error("linux.rootfsPropagation: unknown value %r" % prop)
        # an unbindable "/" could not give us the rootfs bind below: private now, unbindable
        # once the rootfs is "/" (root_propagation)
        L.mount(None, "/", None, _PROPAGATION["private" if "unbindable" in prop else prop])
        if "shared" in prop:
            # pivot_root refuses a shared parent mount: make the rootfs's parent private
            parent = os.path.dirname(rootfs)
            while not os.path.ismount(parent):
                parent = os.path.dirname(parent)
            L.mount(None, parent, None, L.MS_PRIVATE)
        L.mount(rootfs, rootfs, None, L.MS_BIND | L.MS_REC)
        if "overlay" in disabled:
            rootfs = _private_layer(rootfs)
    elif "overlay" in disabled:
        raise Error("switch overlay needs a mount namespace (switch mnt is off too)")
    dev_is_bind = False  # a /dev bound in from a host path has its nodes: make none
    for m in config.get("mounts") or []:
        mount_one(m, rootfs, bundle, ctx)
        options = m.get("options") or []
        if m["destination"].rstrip("/") == "/dev" and (
                m.get("type") == "bind" or "bind" in options or "rbind" in options):
            dev_is_bind = True
    if "implicit-mounts" in disabled:
        _implicit_mounts(config, rootfs, bundle, ctx)
    if "declared-mounts" in disabled:
        # switch "declared-mounts": a runtime (or an engine) that mounts more than config.json says —
        # here the bundle directory, a host path outside the root, read-only
        mount_one({"destination": "/run/undeclared", "type": "bind", "source": bundle,
                   "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}, rootfs, bundle, ctx)
    if not dev_is_bind:
        setup_dev(rootfs, config, ctx, all_host_devices="devices" in disabled)
    return rootfs


def _implicit_mounts(config: Config, rootfs: str, bundle: str, ctx: InitContext) -> None:
    """Switch ``implicit-mounts``: /proc and /sys mounted though the config does not ask for them."""
    named = {m["destination"].rstrip("/") for m in config.get("mounts") or []}
    for dest, mtype in (("/proc", "proc"), ("/sys", "sysfs")):
        if dest not in named:
            mount_one({"destination": dest, "type": mtype, "source": mtype}, rootfs, bundle, ctx)


def _private_layer(rootfs: str) -> str:
    """Switch ``overlay``: the image is not layered as built, and writes go nowhere.

    If the rootfs is an overlay (an image mounted by the engine's snapshotter),
    we mount its lower layers again in *reverse* order, so lower layers shadow
    upper ones and whiteouts and opaque directories no longer hide what is
    below them; any other rootfs becomes the single lower layer.  Either way
    the upper dir is a private tmpfs: no write reaches the bundle.
    """
    lowers = _overlay_lowers(rootfs)
    old = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if not lowers:
            lowers = ["/proc/self/fd/%d" % old]
        L.mount("tmpfs", rootfs, "tmpfs", 0, "mode=755")
        for d in ("upper", "work", "merged"):
            os.mkdir(os.path.join(rootfs, d))
        L.mount("overlay", os.path.join(rootfs, "merged"), "overlay", 0,
                "lowerdir=%s,upperdir=%s/upper,workdir=%s/work"
                % (":".join(reversed(lowers)), rootfs, rootfs))
    finally:
        os.close(old)
    return os.path.join(rootfs, "merged")


def _overlay_lowers(path: str) -> list[str]:
    """The lowerdirs (topmost first) of the overlay mounted at ``path``, or []."""
    found: list[str] = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if pre.split()[4] == path and post.split()[0] == "overlay":
                for opt in post.split()[2].split(","):
                    if opt.startswith("lowerdir="):
                        found = opt[len("lowerdir="):].split(":")
    return found


def enter(rootfs: str, use_pivot: bool) -> None:
    """Make ``rootfs`` the process's ``/``.

    pivot_root swaps the mount namespace's root and lets us detach the old
    one entirely; chroot only changes this process's idea of ``/`` (the host
    tree stays mounted and a CAP_SYS_CHROOT process can climb out).
    """
    if not use_pivot:
        os.chroot(rootfs)
        os.chdir("/")
        return
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fchdir(new)
        L.pivot_root(".", ".")  # the old root is now stacked under the new one at "."
        os.fchdir(old)
        L.mount(None, ".", None, L.MS_SLAVE | L.MS_REC)  # our unmount must not propagate to the host
        L.umount2(".", L.MNT_DETACH)
        os.chdir("/")
    finally:
        os.close(old)
        os.close(new)


def root_propagation(prop: str | None) -> None:
    """After the pivot, the container's "/" (the rootfs mount) gets ``linux.rootfsPropagation``.

    Before the pivot it went to the namespace's copy of the host's tree, which
    governs what reaches the container's mounts from the host; the rootfs
    mount itself was bound from a private parent.  The spec's "shared: the
    rootfs mount belongs to a new peer group" and "unbindable: cannot be
    bind-mounted" are about that mount, and pivot_root refuses a shared new
    root, so they are applied here.  (slave and private change nothing on a
    mount that has no master.)
    """
    if prop:
        L.mount(None, "/", None, _PROPAGATION[prop])


def mask(paths: Iterable[str]) -> None:
    """Hide files behind /dev/null and directories behind an empty ro tmpfs."""
    for p in paths:
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                L.mount("tmpfs", p, "tmpfs", L.MS_RDONLY)
            else:
                L.mount("/dev/null", p, None, L.MS_BIND)
        except FileNotFoundError:
            pass
        except OSError as e:
            if e.errno != 2:
                raise


def readonly(paths: Iterable[str]) -> None:
    """Bind each path onto itself, read-only."""
    for p in paths:
        try:
            L.mount(p, p, None, L.MS_BIND | L.MS_REC)
        except OSError as e:
            if e.errno == 2:
                continue
            raise
        _remount(p, L.MS_RDONLY)


def readonly_root() -> None:
    _remount("/", L.MS_RDONLY)


#: sysctl prefixes that live in a namespace, and which one
_SYSCTL_NS = [("kernel.msgmax", "ipc"), ("kernel.msgmnb", "ipc"), ("kernel.msgmni", "ipc"),
              ("kernel.sem", "ipc"), ("kernel.shmall", "ipc"), ("kernel.shmmax", "ipc"),
              ("kernel.shmmni", "ipc"), ("kernel.shm_rmid_forced", "ipc"), ("fs.mqueue.", "ipc"),
              ("net.", "network"), ("kernel.hostname", "uts"), ("kernel.domainname", "uts")]


def check_sysctl(sysctl: dict[str, str] | None, nstypes: Iterable[str]) -> None:
    """Refuse a sysctl that would change the host (not in a namespace we own).

    kernel.hostname is refused even in a UTS namespace of ours, as runc does:
    the config has a field of its own for it (``hostname``), and two sources
    for one value would leave the order of the writes to decide.
    """
    for key in sysctl or {}:
        if key == "kernel.hostname":
            raise Error('linux.sysctl kernel.hostname is not allowed: it conflicts with the "hostname" field')
        for prefix, ns in _SYSCTL_NS:
            if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
                if ns not in nstypes:
                    raise Error("linux.sysctl %s needs a new %s namespace" % (key, ns))
                break
        else:
            raise Error("linux.sysctl %s is not namespaced: it would change the host" % key)


def write_sysctl(sysctl: dict[str, str] | None) -> None:
    for key, value in (sysctl or {}).items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(str(value))


def umount_under(rootfs: str) -> None:
    """Unmount everything at or below ``rootfs`` (deepest first), lazily."""
    rootfs = os.path.realpath(rootfs)
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == rootfs or mp.startswith(rootfs + "/"):
                points.append(mp)
    for mp in reversed(points):
        try:
            L.umount2(mp, L.MNT_DETACH)
        except OSError:
            pass
