"""Phase 1: load config.json, refuse what we do not implement, read switches.

A runtime that silently ignores a field it does not understand lets a test
pass for the wrong reason, so every key of the runtime-spec is listed here:
either we implement it (``True``) or we say why not (a string), and a config
that sets an unimplemented field to a non-empty value is refused with that
field's dotted name.
"""
from __future__ import annotations

import os

from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable

    from .hints import Config, Namespaces

#: Every switch (negative control) and what turning it off does.
SWITCHES = {
    "pid": "no new PID namespace: the container sees host processes",
    "net": "no new network namespace: the container shares host interfaces",
    "mnt": "no new mount namespace: mounts go to the host (undone on delete), chroot instead of pivot_root",
    "uts": "no new UTS namespace: hostname is the host's (and is not set)",
    "ipc": "no new IPC namespace",
    "user": "no user namespace: uid/gid maps ignored, the process is real host root",
    "cgroupns": "no new cgroup namespace",
    "time": "no new time namespace: linux.timeOffsets ignored",
    "memory": "memory limits not applied",
    "pids": "pids limit not applied",
    "cpu": "cpu quota/period/shares/cpuset not applied",
    "io": "blkio/io limits not applied",
    "pivot_root": "chroot into the rootfs instead of pivot_root (the host root stays reachable)",
    "caps": "capabilities not dropped: the process keeps every capability",
    "nnp": "no_new_privs never set",
    "seccomp": "no seccomp filter loaded",
    "masked-paths": "linux.maskedPaths not masked",
    "readonly-paths": "linux.readonlyPaths left writable",
    "readonly-rootfs": "root.readonly ignored",
    "rlimits": "process.rlimits not applied",
    "devices": "no device cgroup allow-list, and /dev gets every host device node instead of the default six",
    "hooks": "no hooks are run",
    "kill": "the kill verb delivers no signal (and says nothing of it)",
    "exec-fifo": "create does not hold the init until start: the process runs at once",
    "overlay": "an image overlay's layers are stacked in reverse order, and writes go to a private "
               "tmpfs: nothing reaches the bundle's rootfs or its upper dir",
    "cwd-check": "process.cwd is not checked to lie inside the container (CVE-2024-21626)",
    "umask": "process.user.umask ignored: the process keeps the default umask 0022",
    "cwd": "process.cwd ignored: the process starts in /",
    "env": "process.env ignored: the process inherits the runtime's own environment",
    "state": "`state` does not follow the container: it answers \"created\" for any id, even one deleted or "
             "never made",
    "declared-mounts": "one mount more than config.json declares: the bundle directory (a host path outside the "
                       "root) is bound read-only at /run/undeclared",
    "close-fds": "no descriptor is closed before exec: every one the runtime was started with reaches "
                 "the container, whatever --preserve-fds says",
    "preserve-fds": "--preserve-fds is ignored: the container gets stdio only",
    "cgroup-view": "without a cgroup namespace, /sys/fs/cgroup binds the host's hierarchy roots, "
                   "read-write: the container sees every cgroup of the machine",
    "default-cgroup": "with no linux.cgroupsPath the container gets no cgroup of its own: it stays in "
                      "the runtime's cgroups",
    "session": "the init and exec'd processes are not made session leaders: they keep the caller's "
               "process group and session, which lie outside the container",
    "hook-env": "a hook without env runs with an empty environment",
    "poststart-warning": "a failing poststart hook is fatal: start fails and the container is killed",
    "freezer": "pause and resume leave the freezer alone: the processes keep running",
    "thaw": "delete --force of a paused container neither thaws nor kills it: the frozen init is left "
            "behind (as on cgroup v1, where SIGKILL waits for a thaw)",
    "ps": "ps lists the container's init only",
    "update": "update writes no limit (and says nothing of it)",
    "cli-checks": "the command line takes what it should refuse: unknown flags and verbs, bad flag "
                  "values, and state of an unknown id (answered as stopped)",
    "stdio": "the regular files among the runtime's stdio are handed to nobody (fchown 65534:65534), "
             "as gVisor's runsc does to its sandbox's user",
}

NAMESPACE_SWITCH = {
    "pid": "pid", "network": "net", "mount": "mnt", "uts": "uts", "ipc": "ipc",
    "user": "user", "cgroup": "cgroupns", "time": "time",
}

_U = "not implemented by runtime-ref"
_HOOKS = [{"path": True, "args": True, "env": True, "timeout": True}]
_IDMAP = [{"containerID": True, "hostID": True, "size": True}]
_DEVRULE = [{"allow": True, "type": True, "major": True, "minor": True, "access": True}]
_THROTTLE = [{"major": True, "minor": True, "rate": True}]

#: The shape of config.json: True = implemented, str = why it is refused.
SCHEMA: dict[str, Any] = {
    "ociVersion": True,
    "process": {
        "terminal": True, "consoleSize": True,
        "user": {"uid": True, "gid": True, "umask": True, "additionalGids": True,
                 "username": "process.user.username is for Windows"},
        "args": True, "commandLine": "process.commandLine is for Windows",
        "env": True, "cwd": True,
        "capabilities": {k: True for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
        "rlimits": [{"type": True, "hard": True, "soft": True}],
        "noNewPrivileges": True, "oomScoreAdj": True,
        "apparmorProfile": "AppArmor " + _U, "selinuxLabel": "SELinux " + _U,
        "ioPriority": _U, "scheduler": _U, "execCPUAffinity": _U,
    },
    "root": {"path": True, "readonly": True},
    "hostname": True, "domainname": True,
    "mounts": [{"destination": True, "type": True, "source": True, "options": True,
                "uidMappings": "id-mapped mounts " + _U, "gidMappings": "id-mapped mounts " + _U}],
    "hooks": {k: _HOOKS for k in ("prestart", "createRuntime", "createContainer",
                                  "startContainer", "poststart", "poststop")},
    "annotations": True,
    "linux": {
        "namespaces": [{"type": True, "path": True}],
        "uidMappings": _IDMAP, "gidMappings": _IDMAP,
        "timeOffsets": True,
        "devices": [{"path": True, "type": True, "major": True, "minor": True,
                     "fileMode": True, "uid": True, "gid": True}],
        "cgroupsPath": True,
        "resources": {
            "devices": _DEVRULE,
            "memory": {"limit": True, "reservation": True, "swap": True, "swappiness": True,
                       "disableOOMKiller": True, "useHierarchy": True, "checkBeforeUpdate": True,
                       "kernel": "kernel memory limits are gone from Linux 6.x",
                       "kernelTCP": "kernel TCP memory limits " + _U},
            "cpu": {"shares": True, "quota": True, "period": True, "cpus": True, "mems": True,
                    "realtimeRuntime": "realtime cpu " + _U, "realtimePeriod": "realtime cpu " + _U,
                    "idle": _U, "burst": _U},
            "pids": {"limit": True},
            "blockIO": {"weight": True, "leafWeight": _U, "weightDevice": _U,
                        "throttleReadBpsDevice": _THROTTLE, "throttleWriteBpsDevice": _THROTTLE,
                        "throttleReadIOPSDevice": _THROTTLE, "throttleWriteIOPSDevice": _THROTTLE},
            "hugepageLimits": "hugetlb limits " + _U, "network": "net_cls/net_prio " + _U,
            "rdma": "rdma limits " + _U, "unified": True,
        },
        "sysctl": True,
        "seccomp": {"defaultAction": True, "defaultErrnoRet": True, "architectures": True,
                    "flags": True, "listenerPath": "seccomp notify " + _U,
                    "listenerMetadata": "seccomp notify " + _U,
                    "syscalls": [{"names": True, "action": True, "errnoRet": True,
                                  "args": [{"index": True, "value": True, "valueTwo": True, "op": True}]}]},
        "rootfsPropagation": True, "maskedPaths": True, "readonlyPaths": True,
        "mountLabel": "SELinux " + _U, "personality": _U, "intelRdt": "Intel RDT " + _U,
        "memoryPolicy": _U, "netDevices": _U,
    },
}


def _check(node: object, schema: Any, where: str) -> None:
    """Walk ``node`` along ``schema``; raise on the first field we would ignore."""
    if schema is True:
        return
    if isinstance(schema, str):
        if node not in (None, "", [], {}, 0, False):
            raise Error("unsupported config field %s: %s" % (where, schema))
        return
    if isinstance(schema, list):
        if not isinstance(node, list):
            raise Error("config field %s must be a list" % where)
        for i, item in enumerate(node):
            _check(item, schema[0], "%s[%d]" % (where, i))
        return
    if not isinstance(node, dict):
        raise Error("config field %s must be an object" % where)
    for key, value in node.items():
        if key not in schema:
            raise Error("unsupported config field %s%s: unknown to runtime-ref"
                        % (where + "." if where else "", key))
        _check(value, schema[key], (where + "." if where else "") + key)


def validate(config: Config) -> Config:
    """Refuse anything we would otherwise ignore; return the config."""
    _check(config, SCHEMA, "")
    version = str(config.get("ociVersion") or "")
    if not version.startswith("1."):
        raise Error("unsupported config field ociVersion: %r (runtime-ref reads 1.x configs)" % version)
    proc = config.get("process")
    if not proc or not proc.get("args"):
        raise Error("config field process.args is required (runtime-ref only runs processes)")
    if proc.get("terminal"):
        raise Error("unsupported config field process.terminal: runtime-ref does not allocate a "
                    "console; set it to false (stdio is inherited)")
    if not (config.get("root") or {}).get("path"):
        raise Error("config field root.path is required")
    for ns in (config.get("linux") or {}).get("namespaces") or []:
        if ns.get("type") not in NAMESPACE_SWITCH:
            raise Error("unsupported config field linux.namespaces: unknown type %r" % ns.get("type"))
    return config


def version_at_least(config: Config, least: tuple[int, int]) -> bool:
    """Whether the config's ociVersion (MAJOR.MINOR…) is ``least`` or later; where the spec
    changed a rule, the config's version says which one the runtime follows."""
    parts = str(config.get("ociVersion") or "").split(".")
    try:
        return (int(parts[0]), int(parts[1].split("-")[0])) >= least
    except (IndexError, ValueError):
        return False


def check_resources(res: dict[str, Any]) -> None:
    """A ``linux.resources`` object on its own (``update``): refuse what we would ignore."""
    _check(res, SCHEMA["linux"]["resources"], "linux.resources")


def load(bundle: str) -> tuple[Config, bytes]:
    """Read and validate ``<bundle>/config.json``; returns (config, raw bytes)."""
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise Error("cannot open %s: no such file (is --bundle right?)" % path) from None
    from .jsonfast import loads
    try:
        config = loads(raw)
    except ValueError as e:
        raise Error("%s is not valid JSON: %s" % (path, e)) from None
    if not isinstance(config, dict):
        raise Error("%s must hold a JSON object" % path)
    return validate(config), raw


def parse_switches(values: Iterable[str]) -> set[str]:
    """Turn ``--disable a,b`` values and $RUNTIME_REF_DISABLE into a set."""
    out: set[str] = set()
    for v in list(values) + [os.environ.get("RUNTIME_REF_DISABLE", "")]:
        for name in v.split(","):
            name = name.strip()
            if not name:
                continue
            if name not in SWITCHES:
                raise Error("unknown switch %r (known: %s)" % (name, " ".join(SWITCHES)))
            out.add(name)
    return out


def namespaces(config: Config, disabled: Iterable[str]) -> Namespaces:
    """The namespaces to create or join: {type: path-or-None}, minus switched-off ones."""
    out: Namespaces = {}
    for ns in (config.get("linux") or {}).get("namespaces") or []:
        t = ns["type"]
        if NAMESPACE_SWITCH[t] in disabled:
            continue
        if t in out:
            raise Error("config field linux.namespaces: %s given twice" % t)
        out[t] = ns.get("path") or None
    return out


def rootless(config: Config, uid: int, gid: int) -> Config:
    """``spec --rootless``: runc's ToRootless, so the config runs for an unprivileged caller.

    A user namespace mapping the caller to root, no network namespace (an
    unprivileged user could not give it an interface), /sys bound from the host
    (sysfs cannot be mounted without owning the network namespace), no gid=
    on devpts (the group is not mapped) and no cgroup limits (no cgroup is
    writable for that user).
    """
    linux = config.setdefault("linux", {})
    linux["namespaces"] = [ns for ns in linux.get("namespaces") or [] if ns["type"] != "network"]
    linux["namespaces"].append({"type": "user"})
    linux["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
    linux.pop("resources", None)
    for m in config.get("mounts") or []:
        if m.get("type") == "sysfs":
            m.update(type="none", source="/sys", options=["rbind", "nosuid", "noexec", "nodev", "ro"])
        elif m.get("type") == "devpts":
            m["options"] = [o for o in m.get("options") or [] if not o.startswith("gid=")]
    return config


def default_spec() -> Config:
    """What ``runtime-ref spec`` writes: a minimal config like ``runc spec``'s."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(caps) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "runtime-ref",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }
