"""Phase: cgroups — limits on what the container may use.

The host's layout is detected from /proc/self/mountinfo, never assumed:
``v2`` when cgroup2 is mounted at /sys/fs/cgroup, otherwise ``v1`` (which
covers "hybrid" hosts, where cgroup2 sits at /sys/fs/cgroup/unified with no
controllers worth using).  On v1 every controller is its own tree, so the
container gets one directory per hierarchy at ``linux.cgroupsPath``; on v2 it
gets one directory, and the controllers must first be enabled in the
parents' ``cgroup.subtree_control``.

Only directories at ``linux.cgroupsPath`` are ever created or written (plus
v2's subtree_control of its ancestors); ``remove`` deletes exactly the
directories ``create`` made, and whatever sub-cgroups the container made in
its own (``remove_children``).  A relative cgroupsPath is placed below this
runtime's own cgroup in each hierarchy, as runc does (the spec leaves its
base to the runtime).

Rootless (the runtime is not uid 0), as runc: a cgroup is made only at a
``cgroupsPath`` the user may write (a delegated v2 subtree); without one the
container stays in the caller's cgroups, and a limit that needs a cgroup
makes create fail (``refuse_unplaced_limits``).  Device rules are not
written: a user namespace can make no device node and reach none the user
could not open anyway, and the device cgroup (v1) or its BPF program (v2)
needs privileges the user lacks.
"""
from __future__ import annotations

import os
import time

from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Sequence

    from .hints import CgroupSet, Switches

    #: linux.resources
    Resources = dict[str, Any]
    #: linux.devices (the nodes the container gets: each is allowed too)
    Devices = Sequence[dict[str, Any]]

#: controller -> the switch that turns its limits off
CONTROLLER_SWITCH = {"memory": "memory", "pids": "pids", "cpu": "cpu", "cpuset": "cpu",
                     "blkio": "io", "io": "io", "devices": "devices", "hugetlb": "hugetlb"}

#: what runc always allows on top of the spec's rules (specconv.AllowedDevices)
DEFAULT_DEVICE_RULES = [
    "c *:* m", "b *:* m", "c 1:3 rwm", "c 1:8 rwm", "c 1:7 rwm", "c 5:0 rwm",
    "c 1:5 rwm", "c 1:9 rwm", "c 5:1 rwm", "c 136:* rwm", "c 5:2 rwm", "c 10:200 rwm",
]


def detect() -> tuple[str, dict[str, str]]:
    """Return ("v2", {"": mountpoint}) or ("v1", {controller-or-name: mountpoint})."""
    v1: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fstype, _, opts = post.split()[:3]
            mnt = pre.split()[4]
            if fstype == "cgroup2" and mnt == "/sys/fs/cgroup":
                return "v2", {"": mnt}
            if fstype == "cgroup":
                for opt in opts.split(","):
                    if opt in ("rw", "ro") or opt.startswith(("relatime", "noatime", "nosuid", "nodev", "noexec")):
                        continue
                    if opt.startswith("name=") or "=" not in opt:
                        v1.setdefault(opt, mnt)
    return "v1", v1


def rootless() -> bool:
    """Whether this runtime runs as an unprivileged user."""
    return os.geteuid() != 0


#: linux.resources keys whose limits need a cgroup of the container's own
_LIMITS = {"memory": "memory", "pids": "pids", "cpu": "cpu", "blockIO": "io", "hugepageLimits": "memory",
           "unified": "", "network": ""}


def refuse_unplaced_limits(res: Resources, disabled: Switches) -> None:
    """Rootless without a cgroup: fail on any limit it asks for (devices aside: see the module doc)."""
    asked = [key for key, switch in _LIMITS.items() if res.get(key) and switch not in disabled]
    if asked:
        raise Error("cannot set linux.resources.%s: running rootless (uid %d) without linux.cgroupsPath, "
                    "the container has no cgroup of its own to hold the limit" % (", ".join(asked), os.geteuid()))


def _write(path: str, value: str) -> None:
    """One write of ``value`` (a cgroup file takes each write(2) as one request; no buffered file
    object either: a container start writes a dozen of these)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
        try:
            if value:  # (as a file object: nothing written, no empty write(2))
                os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise Error("cannot write %r to %s: %s" % (value, path, e.strerror)) from None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _mkdirs(base: str, rel: str, created: list[str]) -> str:
    """mkdir -p base/rel, remembering each directory made.

    A parent shared with other containers (our default /runtime-ref) may be
    removed by the last of them between our two mkdirs: start again then.
    """
    for attempt in range(3):
        path = base
        try:
            for part in rel.strip("/").split("/"):
                path = os.path.join(path, part)
                try:
                    os.mkdir(path)
                    created.append(path)
                except FileExistsError:
                    pass
            return path
        except FileNotFoundError:
            if attempt == 2:
                raise
    return path


def _device_rule(r: dict[str, Any]) -> str:
    """One linux.resources.devices entry as a v1 rule: "c 1:3 rwm"."""
    def num(v: Any) -> str:
        return "*" if v is None or v == -1 else str(v)
    return "%s %s:%s %s" % (r.get("type") or "a", num(r.get("major")), num(r.get("minor")),
                            r.get("access") or "rwm")


def device_rules(res: Resources, spec_devices: Devices) -> list[tuple[bool, str]]:
    """[(allow, "c 1:3 rwm"), ...]: the spec's rules, runc's defaults, the spec's devices."""
    rules = [(bool(r.get("allow")), _device_rule(r)) for r in res.get("devices") or []]
    rules += [(True, r) for r in DEFAULT_DEVICE_RULES]
    rules += [(True, "%s %d:%d rwm" % ("b" if d["type"] == "b" else "c", d["major"], d["minor"]))
              for d in spec_devices if d["type"] != "p"]  # a fifo is no device: the cgroup has no say
    return rules


def _v1_limits(ctrl: str, d: str, res: Resources, spec_devices: Devices) -> None:
    """Write one v1 controller's limits into directory d."""
    def w(name: str, v: object) -> None:
        _write(os.path.join(d, name), str(v))
    if ctrl == "memory":
        m = res.get("memory") or {}
        if m.get("swap") and not os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes")):
            raise Error("linux.resources.memory.swap: this host has no swap accounting "
                        "(memory.memsw.limit_in_bytes is missing)")
        # the kernel keeps memory <= memory+swap at every moment: when both rise
        # (an update), memory+swap must go first, else memory first
        order = [("memory.limit_in_bytes", m.get("limit")), ("memory.memsw.limit_in_bytes", m.get("swap"))]
        if m.get("limit") and m.get("swap") and _raising(os.path.join(d, "memory.limit_in_bytes"), m["limit"]):
            order.reverse()
        for name, value in order:
            if value:
                w(name, value)
        if m.get("reservation"):
            w("memory.soft_limit_in_bytes", m["reservation"])
        if m.get("swappiness") is not None:
            w("memory.swappiness", m["swappiness"])
        if m.get("disableOOMKiller"):
            w("memory.oom_control", 1)
    elif ctrl == "pids":
        p = res.get("pids") or {}
        if "limit" in p:
            w("pids.max", p["limit"] if p["limit"] > 0 else "max")
    elif ctrl == "cpu":
        c = res.get("cpu") or {}
        if c.get("shares"):
            w("cpu.shares", c["shares"])
        if c.get("period"):
            w("cpu.cfs_period_us", c["period"])
        if c.get("quota"):
            w("cpu.cfs_quota_us", c["quota"])
        if c.get("burst") is not None:
            w("cpu.cfs_burst_us", c["burst"])
        if c.get("idle") is not None:
            w("cpu.idle", c["idle"])
        # the period first: the kernel checks runtime <= period at each write
        if c.get("realtimePeriod"):
            w("cpu.rt_period_us", c["realtimePeriod"])
        if c.get("realtimeRuntime") is not None:
            w("cpu.rt_runtime_us", c["realtimeRuntime"])
    elif ctrl == "hugetlb":
        for size, limit in _hugepage_limits(res):
            w("hugetlb.%s.limit_in_bytes" % size, limit)
    elif ctrl == "cpuset":
        c = res.get("cpu") or {}
        if c.get("cpus"):
            w("cpuset.cpus", c["cpus"])
        if c.get("mems"):
            w("cpuset.mems", c["mems"])
    elif ctrl == "blkio":
        b = res.get("blockIO") or {}
        if b.get("weight"):
            name = "blkio.weight" if os.path.exists(os.path.join(d, "blkio.weight")) else "blkio.bfq.weight"
            w(name, b["weight"])
        for key, name in (("throttleReadBpsDevice", "read_bps_device"),
                          ("throttleWriteBpsDevice", "write_bps_device"),
                          ("throttleReadIOPSDevice", "read_iops_device"),
                          ("throttleWriteIOPSDevice", "write_iops_device")):
            for t in b.get(key) or []:
                w("blkio.throttle." + name, "%d:%d %d" % (t["major"], t["minor"], t["rate"]))
    elif ctrl == "devices":
        if res.get("devices") is None:
            return
        for allow, rule in device_rules(res, spec_devices):
            w("devices.allow" if allow else "devices.deny", rule)


def _hugepage_limits(res: Resources) -> list[tuple[str, int]]:
    """(page size as the cgroup files name it, limit) for each hugepageLimits entry; a size this
    host has no huge pages of is an error (the runtime-spec's example: "3MB")."""
    out = []
    for h in res.get("hugepageLimits") or []:
        size = str(h.get("pageSize") or "")
        kb = {"KB": 1, "MB": 1 << 10, "GB": 1 << 20}.get(size[-2:].upper())
        if kb is None or not size[:-2].isdigit() or \
                not os.path.isdir("/sys/kernel/mm/hugepages/hugepages-%dkB" % (int(size[:-2]) * kb)):
            raise Error("linux.resources.hugepageLimits: this host has no huge pages of size %r" % size)
        out.append((size[:-2] + size[-2:].upper(), int(h["limit"])))
    return out


def _raising(path: str, new: int) -> bool:
    """True when ``new`` (-1: unlimited) is above the limit ``path`` holds now."""
    try:
        return new < 0 or new > int(_read(path))
    except (OSError, ValueError):
        return False


def _v2_limits(d: str, res: Resources, disabled: Switches) -> None:
    """Write every limit of ``res`` the switches leave on into v2 directory d."""
    def w(name: str, v: object) -> None:
        _write(os.path.join(d, name), str(v))
    m = res.get("memory") or {}
    if "memory" not in disabled:
        if m.get("limit"):
            w("memory.max", m["limit"] if m["limit"] > 0 else "max")
        if m.get("swap"):
            if m["swap"] < 0:
                w("memory.swap.max", "max")
            else:
                w("memory.swap.max", max(m["swap"] - (m.get("limit") or 0), 0))
        if m.get("reservation"):
            w("memory.low", m["reservation"])
        if m.get("disableOOMKiller") or m.get("swappiness") is not None:
            raise Error("linux.resources.memory.swappiness/disableOOMKiller do not exist on cgroup v2")
    if "pids" not in disabled:
        p = res.get("pids") or {}
        if "limit" in p:
            w("pids.max", p["limit"] if p["limit"] > 0 else "max")
    if "cpu" not in disabled:
        c = res.get("cpu") or {}
        if c.get("shares"):
            w("cpu.weight", 1 + ((c["shares"] - 2) * 9999) // 262142)
        if c.get("quota") or c.get("period"):
            quota = c.get("quota") or 0
            w("cpu.max", "%s %d" % (quota if quota > 0 else "max", c.get("period") or 100000))
        if c.get("cpus"):
            w("cpuset.cpus", c["cpus"])
        if c.get("mems"):
            w("cpuset.mems", c["mems"])
        if c.get("burst") is not None:
            w("cpu.max.burst", c["burst"])
        if c.get("idle") is not None:
            w("cpu.idle", c["idle"])
        if c.get("realtimeRuntime") or c.get("realtimePeriod"):
            raise Error("linux.resources.cpu.realtimeRuntime/realtimePeriod need cgroup v1 (cgroup v2 "
                        "has no realtime group scheduling)")
    if "hugetlb" not in disabled:
        for size, limit in _hugepage_limits(res):
            w("hugetlb.%s.max" % size, limit)
    if "io" not in disabled:
        b = res.get("blockIO") or {}
        if b.get("weight"):
            name = "io.bfq.weight" if os.path.exists(os.path.join(d, "io.bfq.weight")) else "io.weight"
            w(name, b["weight"] if name == "io.bfq.weight" else 1 + (b["weight"] - 10) * 9999 // 990)
        for key, name in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                          ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops")):
            for t in b.get(key) or []:
                w("io.max", "%d:%d %s=%d" % (t["major"], t["minor"], name, t["rate"]))
    for name, value in (res.get("unified") or {}).items() if "unified" not in disabled else ():
        if "/" in name:
            raise Error("linux.resources.unified: invalid file name %r" % name)
        w(name, value)


def create(cgpath: str, res: Resources, disabled: Switches, spec_devices: Devices = (),
           warm_up: bool = False) -> CgroupSet:
    """Make the container's cgroup directories and its device rules.

    ``warm_up`` (v2, where the runtime moves the init: see ``self_join_files``):
    start ``start_grace_period`` as soon as the directory exists (the sooner
    the kernel starts waiting, the sooner it is done).

    Other limits come later (``set_limits``), but device rules must be in place
    before the init can join: they are written as "deny all, then allow each",
    and an init caught in between could not even create /dev/null.

    Returns {"version", "leaves": [dirs to place the process in], "created": [dirs made]}.
    """
    version, mounts = detect()
    if res.get("hugepageLimits") and "hugetlb" not in disabled:
        _hugepage_limits(res)  # a size the host has not: refused before anything is made
        if version == "v1" and "hugetlb" not in mounts:
            raise Error("linux.resources.hugepageLimits: this host has no cgroup v1 hugetlb hierarchy "
                        "(on a hybrid host the cgroup2 one holds no container)")
    at = placement(cgpath)
    created: list[str] = []
    leaves: list[str] = []
    ctrls: list[str] = []
    if rootless():
        disabled = frozenset(disabled) | {"devices"}  # see the module doc
    try:
        if version == "v2":
            base = mounts[""]
            _v2_enable(base, at(""))
            leaves.append(_mkdirs(base, at(""), created))
            ctrls.append("")
            if warm_up:
                start_grace_period(leaves[0])
            if res.get("devices") is not None and "devices" not in disabled:
                from . import devicefilter
                devicefilter.attach(leaves[-1], device_rules(res, spec_devices))
        else:
            if res.get("unified"):
                raise Error("linux.resources.unified needs cgroup v2; this host is v1")
            for ctrl, mnt in mounts.items():  # (no warm-up: on v1 the init joins by itself, self_join_files)
                leaves.append(_mkdirs(mnt, at(ctrl), created))
                ctrls.append(ctrl)
                if ctrl == "cpuset":
                    _cpuset_init(mnt, at(ctrl))
                if ctrl == "devices" and "devices" not in disabled:
                    _v1_limits(ctrl, leaves[-1], res, spec_devices)
    except OSError as e:  # e.g. rootless at a path not delegated to the user
        remove(created)
        raise Error("cannot create cgroup %s as uid %d: %s%s" % (
            e.filename or cgpath, os.geteuid(), e.strerror,
            " (rootless: the path must lie in a cgroup delegated to the user)" if rootless() else "")) from None
    except BaseException:
        remove(created)
        raise
    return {"version": version, "leaves": leaves, "created": created, "controllers": ctrls}


def placement(cgpath: str) -> Callable[[str], str]:
    """hierarchy key (v1 controller or name=…, "" on v2) -> the container's path in it.

    An absolute cgroupsPath is that path in every hierarchy; a relative one
    goes below this runtime's own cgroup there (runc's rule; crun's is below
    the root: the spec leaves it to the runtime).
    """
    if cgpath.startswith("/"):
        return lambda ctrl: cgpath
    own = _own_paths()
    return lambda ctrl: os.path.join(own.get(ctrl, "/"), cgpath)


def none() -> CgroupSet:
    """No cgroup of the container's own (switch ``default-cgroup``): it stays in ours."""
    return {"version": detect()[0], "leaves": [], "created": [], "controllers": []}


def own_dirs(cg: CgroupSet) -> dict[str, str]:
    """{hierarchy mount point: the container's directory in it}, for its /sys/fs/cgroup view.

    The container's leaves where it has them; in a hierarchy where it has none
    (no cgroup of its own) the one this process is in, which it inherits.
    """
    version, mounts = detect()
    by_mount = {mounts[ctrl]: d for ctrl, d in zip(cg["controllers"], cg["leaves"]) if ctrl in mounts}
    mine = _own_paths()
    for ctrl, mnt in mounts.items():
        if mnt not in by_mount:
            rel = mine.get("" if version == "v2" else ctrl, "/")
            by_mount[mnt] = os.path.join(mnt, rel.lstrip("/"))
    return by_mount


def dirs_of(pid: int) -> list[str]:
    """The cgroup directories process ``pid`` is in, one per hierarchy mounted here."""
    version, mounts = detect()
    paths: dict[str, str] = {}
    with open("/proc/%d/cgroup" % pid) as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for ctrl in ctrls.split(",") if ctrls else [""]:
                paths[ctrl] = path
    return [os.path.join(mnt, paths[ctrl].lstrip("/")) for ctrl, mnt in mounts.items()
            if ctrl in paths and paths[ctrl] != "/"]


def _own_paths() -> dict[str, str]:
    """controller (v2: "") -> this process's cgroup path, from /proc/self/cgroup."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            for ctrl in ctrls.split(",") if ctrls else [""]:
                paths[ctrl] = path
    return paths


def set_limits(cg: CgroupSet, res: Resources, disabled: Switches, spec_devices: Devices = ()) -> None:
    """Write ``linux.resources`` into the directories ``create`` made.

    Like runc (Apply, then Set), this may happen after the process joined:
    it only has to be done before the container's process starts.
    """
    if cg["version"] == "v2":
        for leaf in cg["leaves"][:1]:  # none: switch default-cgroup left the container in ours
            _v2_limits(leaf, res, disabled)  # device rules: see create()
        return
    for ctrl, d in zip(cg["controllers"], cg["leaves"]):
        if CONTROLLER_SWITCH.get(ctrl) in disabled or ctrl not in CONTROLLER_SWITCH or ctrl == "devices":
            continue  # devices: already done by create()
        _v1_limits(ctrl, d, res, spec_devices)


def _cpuset_init(mnt: str, cgpath: str) -> None:
    """A new v1 cpuset starts empty and refuses tasks: copy the parent's."""
    path = mnt
    for part in cgpath.strip("/").split("/"):
        parent, path = path, os.path.join(path, part)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not _read(os.path.join(path, name)):
                _write(os.path.join(path, name), _read(os.path.join(parent, name)))


def _v2_enable(base: str, cgpath: str) -> None:
    """Enable the controllers we use in every ancestor's subtree_control (v2 needs it)."""
    want = {"memory", "pids", "cpu", "io", "cpuset", "hugetlb"}
    path = base
    for part in cgpath.strip("/").split("/"):
        avail = set(_read(os.path.join(path, "cgroup.controllers")).split())
        on = set(_read(os.path.join(path, "cgroup.subtree_control")).split())
        missing = (want & avail) - on
        if missing:
            _write(os.path.join(path, "cgroup.subtree_control"), " ".join("+" + c for c in sorted(missing)))
        path = os.path.join(path, part)
        if not os.path.isdir(path):
            break


def find(cgpath: str) -> CgroupSet:
    """The leaf directories at ``cgpath`` that exist (for cleaning up after a killed create)."""
    version, mounts = detect()
    at = placement(cgpath)
    found = [(ctrl, os.path.join(m, at(ctrl).strip("/"))) for ctrl, m in mounts.items()]
    found = [(ctrl, d) for ctrl, d in found if os.path.isdir(d)]
    leaves = [d for _, d in found]
    return {"version": version, "leaves": leaves, "created": leaves, "controllers": [c for c, _ in found]}


def start_grace_period(cgroup_dir: str) -> None:
    """Get the kernel's slow part of joining a cgroup going, in a thread.

    Every write to cgroup.procs takes a global lock whose first taker waits
    for an RCU grace period; takers shortly after do not.  Asking to move a
    pid that cannot exist into our *own* cgroup takes that lock, waits, fails
    with ESRCH and changes nothing, so that the real join, moments later,
    finds the grace period already over.
    """
    import _thread

    def attempt(path: str) -> None:
        try:
            with open(path, "w") as f:
                f.write("2147483647")
        except OSError:
            pass
    _thread.start_new_thread(attempt, (os.path.join(cgroup_dir, "cgroup.procs"),))


def add(leaves: Iterable[str], pid: int) -> None:
    """Move process ``pid`` into every leaf (the way that takes the kernel's global lock: v2)."""
    for d in leaves:
        _write(os.path.join(d, "cgroup.procs"), str(pid))


def self_join_files(cg: CgroupSet) -> list[int]:
    """v1: each leaf's ``tasks``, opened for writing, for a single-threaded child to join by
    writing "0" (``join_self``); [] on v2 or without cgroups of the container's own.

    Why: moving a *process* (cgroup.procs, or any pid but 0) takes the kernel's
    global threadgroup lock, whose first taker waits for an RCU grace period
    (5-12 ms here, longer than the rest of a container start); a thread that
    moves *itself* ("0" into v1's ``tasks``) needs only the cgroup mutex
    (kernel/cgroup/cgroup.c, cgroup_procs_write_start).  For a process of one
    thread, as a freshly forked child is, the outcome is the same.  v2 has no
    such way (a thread cannot leave its process's domain).  The files are
    opened here, by the runtime: the kernel checks the opener's credentials,
    and the child may already be in a user namespace that could not open them.
    """
    if cg["version"] != "v1":
        return []
    fds: list[int] = []
    try:
        for d in cg["leaves"]:
            fds.append(os.open(os.path.join(d, "tasks"), os.O_WRONLY | os.O_CLOEXEC))
    except OSError as e:
        for fd in fds:
            os.close(fd)
        raise Error("cannot open %s: %s" % (e.filename, e.strerror)) from None
    return fds


def enter(cg: CgroupSet) -> None:
    """Move the calling process, a child of one thread (``exec``'s), into the container's cgroups."""
    fds = self_join_files(cg)
    if fds:
        join_self(fds)
    else:
        add(cg["leaves"], 0)


def join_self(fds: list[int]) -> None:
    """Move the calling thread (a child of one thread: the whole process) into the cgroups
    whose ``tasks`` files ``self_join_files`` opened, and close them."""
    try:
        for fd in fds:
            os.write(fd, b"0")
    except OSError as e:
        raise Error("cannot join the container's cgroups: %s" % e.strerror) from None
    finally:
        for fd in fds:
            os.close(fd)


def pids(leaves: Iterable[str]) -> list[int]:
    """Every pid in the container's cgroup (read from the first hierarchy)."""
    for d in leaves:
        try:
            return [int(p) for p in _read(os.path.join(d, "cgroup.procs")).split()]
        except FileNotFoundError:
            continue
    return []


def remove_shared_parents(leaves: Iterable[str]) -> None:
    """rmdir the parent of each leaf if no other container's cgroup is left in it (our default
    /runtime-ref, which whichever container came first made): the kernel refuses while it has one."""
    for d in leaves:
        try:
            os.rmdir(os.path.dirname(d))
        except OSError:
            pass  # another container's cgroup is still there (EBUSY), or it is gone already


def remove_children(leaves: Iterable[str]) -> None:
    """rmdir every cgroup the container made below its own (a container with a writable cgroup
    namespace may), deepest first: its own directory cannot go while they are there."""
    for leaf in leaves:
        if not _has_subdirs(leaf):
            continue  # the usual case, found without walking
        below = []
        for top, dirs, _ in os.walk(leaf):
            below += [os.path.join(top, d) for d in dirs]
        for d in sorted(below, key=lambda p: -p.count("/")):
            remove([d])


def _has_subdirs(d: str) -> bool:
    try:
        with os.scandir(d) as entries:
            return any(e.is_dir(follow_symlinks=False) for e in entries)
    except OSError:
        return False


def remove(created: list[str], timeout: float = 2.0) -> None:
    """rmdir what we made, deepest first; retry while exiting tasks linger."""
    deadline = time.monotonic() + timeout
    for d in reversed(created):
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno == 16 and any(x.is_dir() for x in os.scandir(d)):
                    break  # a shared parent that still holds other containers' cgroups
                if e.errno == 16 and time.monotonic() < deadline:  # EBUSY: tasks still exiting
                    time.sleep(0.005)
                    continue
                raise Error("cannot remove cgroup %s: %s" % (d, e.strerror)) from None
