"""Phase 1: load config.json, refuse what we do not implement, read switches.

A runtime that silently ignores a field it does not understand lets a test
pass for the wrong reason, so every key of the runtime-spec is listed here:
either we implement it (``True``) or we say why not (a string), and a config
that sets an unimplemented field to a non-empty value is refused with that
field's dotted name.  A property the runtime-spec does not define is another
matter: config.md ("Extensibility") says a runtime MUST NOT generate an error
for an unknown property and MUST ignore it, so that a config written for a
later spec or carrying a vendor's extension still runs.
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
    "cli-checks": "the command line takes what it should refuse: unknown flags, verbs and signals, bad "
                  "flag values, a verb without its container id or with an unknown one (answered with "
                  "success; state: as stopped)",
    "stdio": "the regular files among the runtime's stdio are handed to nobody (fchown 65534:65534), "
             "as gVisor's runsc does to its sandbox's user",
    "delete-check": "delete without --force removes a created or running container (kills it) instead of "
                    "refusing",
    "start-check": "start of a container that is not created (a stopped one) answers success and does nothing",
    "kill-check": "kill of a container that is not running answers success and does nothing",
    "state-fields": "state prints only status and pid: no ociVersion, id, bundle or annotations",
    "pid-file": "--pid-file is ignored: no file is written",
    "reread-config": "start reads the bundle's config.json again (and refuses it when it is not valid) "
                     "instead of the one create read",
    "run-cleanup": "run leaves the stopped container behind (as --keep): its id stays taken",
    "id-check": "container ids are not checked beyond being one directory name: spaces, colons and the "
                "like are taken",
    "validate": "config.json is not validated: ociVersion not checked, unknown capability names and rlimit "
                "types dropped, empty process.args taken (as `true`), a user namespace without mappings "
                "taken (root mapped to root)",
    "extensions": "a property the runtime-spec does not define is refused (the spec says: ignore it)",
    "hook-order": "the hooks of each kind run in the reverse of their listed order",
    "hook-state": "hooks get only id and status on stdin",
    "hook-sigpipe": "SIGPIPE kills the runtime while it writes the state to a hook (crun 1.8's start and "
                    "delete): a hook that closes its stdin unread ends the verb half done",
    "hook-namespace": "createContainer and startContainer hooks are run by the runtime in its own "
                      "namespaces, not in the container's",
    "hook-args": "a hook runs with its path as argv[0] and the runtime's environment under its own env",
    "hook-timeout": "a hook's timeout is ignored",
    "poststop-warning": "a failing poststop hook is fatal: delete fails and the later hooks do not run",
    "cgroups-path": "a relative linux.cgroupsPath is ignored: the container gets the default cgroup, "
                    "/runtime-ref/<id>",
    "cgroup-cleanup": "delete leaves the container's cgroup directories behind",
    "cgroup-ownership": "start takes the cgroups the init is in as the container's own (even one another "
                        "program moved it to), and delete removes them",
    "unified": "linux.resources.unified is ignored",
    "hugetlb": "linux.resources.hugepageLimits are not written",
    "log-format": "--log-format is ignored: the log is text",
    "features": "features prints an empty document",
    "sysctl": "linux.sysctl ignored: neither checked nor written",
    "rootfs-propagation": "linux.rootfsPropagation ignored: the container's root is made rprivate whatever the "
                          "config says",
    "rootfs-shared": "linux.rootfsPropagation ignored: the container's root is made shared (a new peer group) "
                     "whatever the config asks",
    "mount-propagation": "the mounts' propagation options (rslave, rprivate, rshared …) are not applied: each "
                         "mount keeps what it inherits from the root",
    "mount-options": "the mounts' options are ignored but bind/rbind and propagation: each is mounted with the "
                     "kernel's default flags and no data (no ro, nosuid, noexec, mode=, size= …)",
    "mount-order": "the mounts are made in the reverse of config order",
    "rbind": "rbind is mounted as bind: the source's submounts are not carried along",
    "bind-nondir": "a bind source that is not a directory is copied into a regular file, not bound",
    "sysfs-fallback": "where sysfs cannot be mounted (a user namespace without a network namespace of its "
                      "own) /sys is left as the rootfs has it, not bound read-only from the host",
    "implicit-mounts": "/proc and /sys are mounted even when the config does not ask for them",
    "tmpfs-mode": "a tmpfs without mode= gets the kernel's 1777, not the mode of the directory it covers",
    "dev-symlinks": "/dev gets no default symlinks: no /dev/fd, /dev/stdin, /dev/stdout, /dev/stderr or /dev/ptmx",
    "securejoin": "mount destinations and /dev are resolved on the host: a symlink in the rootfs is followed "
                  "out of it",
    "device-nodes": "linux.devices ignored: no node is made (nor allowed in the device cgroup)",
    "device-rules": "linux.resources.devices ignored: the device cgroup denies every device but runtime-ref's "
                    "default list",
    "ns-path-type": "a namespace given by path is joined without checking its type (setns with nstype 0)",
    "force-namespaces": "the pid, network, ipc, uts and cgroup namespaces are created even when the config "
                        "leaves them out (it must then share the runtime's)",
    # the process's kernel attributes (attributes.py): each field left alone, unchecked
    "oom-score-adj": "process.oomScoreAdj ignored: oom_score_adj stays the runtime's",
    "scheduler": "process.scheduler ignored (and not checked): the runtime's policy and nice value",
    "ioprio": "process.ioPriority ignored: the runtime's I/O class and level",
    "personality": "linux.personality ignored: the runtime's execution domain",
    "mempolicy": "linux.memoryPolicy ignored (and not checked): the runtime's NUMA policy",
    "cpu-affinity": "process.execCPUAffinity ignored: an exec'd process keeps the runtime's CPUs",
    "home": "HOME is not filled in from the container's /etc/passwd when process.env lacks it",
    "args-lookup": "a relative process.args[0] is looked up from / instead of process.cwd",
    # privilege (security.py, seccomp.py)
    "ambient": "process.capabilities.ambient ignored: a non-root process loses its capabilities at execve",
    "cap-names": "a capability name runtime-ref does not know is dropped without a word (no error, no warning)",
    "force-nnp": "no_new_privs is set even when process.noNewPrivileges is false",
    "seccomp-args": "the argument conditions of seccomp rules are ignored: a rule applies to every call of "
                    "its system calls",
    # LSM labels (lsm.py)
    "apparmor": "process.apparmorProfile ignored (and not checked): the process runs unconfined",
    "selinux": "process.selinuxLabel ignored (and not checked): the process keeps the runtime's label",
    # exec (exec.py)
    "exec-namespaces": "an exec'd process joins none of the init's namespaces (only its root): it runs in the "
                       "runtime's",
    "exec-cgroup": "an exec'd process is not placed in the container's cgroups: it stays in the runtime's",
    "exec-confine": "an exec'd process keeps the runtime's privileges: capabilities not dropped, no "
                    "no_new_privs, no seccomp filter, no LSM label",
    "exec-opts": "exec's own flags are ignored: --env, --cwd, --user, --cap, --additional-gids, "
                 "--no-new-privs, --process",
    "exec-status": "exec exits 0 whatever happened: the process's exit status and exec's own failures "
                   "are dropped",
    "terminal": "process.terminal ignored: no pseudo-terminal is made, the process keeps the stdio create "
                "was given, --console-socket is accepted and never connected to, and create without it "
                "is not refused",
    "console-size": "process.consoleSize ignored: the terminal keeps the size a new pty has (0x0)",
    "exec-terminal": "exec takes process.terminal from the container's config instead of -t: exec into a "
                     "container with a terminal is refused (runtime-ref makes no terminal for exec)",
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
        "apparmorProfile": True, "selinuxLabel": True,
        "ioPriority": {"class": True, "priority": True},
        "scheduler": {k: True for k in ("policy", "nice", "priority", "flags", "runtime", "deadline", "period")},
        "execCPUAffinity": {"initial": True, "final": True},
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
                    "realtimeRuntime": True, "realtimePeriod": True, "idle": True, "burst": True},
            "pids": {"limit": True},
            "blockIO": {"weight": True, "leafWeight": _U, "weightDevice": _U,
                        "throttleReadBpsDevice": _THROTTLE, "throttleWriteBpsDevice": _THROTTLE,
                        "throttleReadIOPSDevice": _THROTTLE, "throttleWriteIOPSDevice": _THROTTLE},
            "hugepageLimits": [{"pageSize": True, "limit": True}], "network": "net_cls/net_prio " + _U,
            "rdma": "rdma limits " + _U, "unified": True,
        },
        "sysctl": True,
        "seccomp": {"defaultAction": True, "defaultErrnoRet": True, "architectures": True,
                    "flags": True, "listenerPath": "seccomp notify " + _U,
                    "listenerMetadata": "seccomp notify " + _U,
                    "syscalls": [{"names": True, "action": True, "errnoRet": True,
                                  "args": [{"index": True, "value": True, "valueTwo": True, "op": True}]}]},
        "rootfsPropagation": True, "maskedPaths": True, "readonlyPaths": True,
        "mountLabel": "SELinux mount labels " + _U, "personality": {"domain": True, "flags": True}, "intelRdt": "Intel RDT " + _U,
        "memoryPolicy": {"mode": True, "nodes": True, "flags": True}, "netDevices": _U,
    },
}


def _check(node: object, schema: Any, where: str, extensions: bool = True) -> None:
    """Walk ``node`` along ``schema``; raise on the first field we would ignore.

    A key the runtime-spec does not define is passed over (``extensions``, the
    spec's MUST), or refused (switch ``extensions`` off).
    """
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
            _check(item, schema[0], "%s[%d]" % (where, i), extensions)
        return
    if not isinstance(node, dict):
        raise Error("config field %s must be an object" % where)
    for key, value in node.items():
        if key not in schema:
            if extensions:
                continue  # not a runtime-spec property: ignored, as config.md says
            raise Error("unsupported config field %s%s: unknown to runtime-ref"
                        % (where + "." if where else "", key))
        _check(value, schema[key], (where + "." if where else "") + key, extensions)


def validate(config: Config, disabled: Iterable[str] = ()) -> Config:
    """Refuse anything we would otherwise ignore; return the config.

    Switch ``validate``: what a runtime that validates nothing would take (the
    checks that keep runtime-ref itself working stay: a rootfs, some args).
    """
    disabled = set(disabled)
    _check(config, SCHEMA, "", "extensions" not in disabled)
    proc = config.get("process")
    if "validate" in disabled:
        _drop_unknown_names(proc or {})
        _map_root_if_unmapped(config)
    version = str(config.get("ociVersion") or "")
    if not version.startswith("1.") and "validate" not in disabled:
        raise Error("unsupported config field ociVersion: %r (runtime-ref reads 1.x configs)" % version)
    if proc and not proc.get("args") and "validate" in disabled:
        proc["args"] = ["true"]
    if not proc or not proc.get("args"):
        raise Error("config field process.args is required (runtime-ref only runs processes)")
    if not (config.get("root") or {}).get("path"):
        raise Error("config field root.path is required")
    for ns in (config.get("linux") or {}).get("namespaces") or []:
        if ns.get("type") not in NAMESPACE_SWITCH:
            raise Error("unsupported config field linux.namespaces: unknown type %r" % ns.get("type"))
    return config


def _drop_unknown_names(proc: dict[str, Any]) -> None:
    """Switch ``validate``: capability names and rlimit types nobody knows are dropped, not refused."""
    from .security import CAP_NUMBER, RLIMITS
    caps = proc.get("capabilities") or {}
    for kind, names in caps.items():
        caps[kind] = [n for n in names or [] if n in CAP_NUMBER]
    if proc.get("rlimits"):
        proc["rlimits"] = [r for r in proc["rlimits"] if str(r.get("type", "")) in RLIMITS]


def _map_root_if_unmapped(config: Config) -> None:
    """Switch ``validate``: a new user namespace without mappings gets root mapped to root (what a
    runtime that never looks would end up running), rather than a refusal."""
    linux = config.get("linux") or {}
    if any(ns.get("type") == "user" and not ns.get("path") for ns in linux.get("namespaces") or []):
        for kind in ("uidMappings", "gidMappings"):
            linux[kind] = linux.get(kind) or [{"containerID": 0, "hostID": 0, "size": 1}]


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


def load(bundle: str, disabled: Iterable[str] = ()) -> tuple[Config, bytes]:
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
    return validate(config, disabled), raw


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
