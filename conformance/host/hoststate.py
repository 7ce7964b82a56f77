"""What the host shows of a container beyond its cgroup files: the other side of an isolation property.

A property seen only from inside can pass for the wrong reason (the probe
looked in the wrong place); the same property read from the host cannot.
These readers serve the host facts of ``observe.py``:

- ``net_state``: the host's routes or links, read before the container and
  after it (``host_unchanged: routes|links``).  Other scenario runs' network
  canaries (``host_setup: net_canary``, named ``cfk<hex>`` and metric-tagged
  routes over loopback) are left out, so a control run next door cannot make
  this one fail.
- ``link_view``: ``/proc/<pid>/cwd|root|exe`` as the host reads the link, and
  for ``cwd`` whether it lies under the container's root, found by walking up
  from the directory itself (a path string cannot tell the container's
  ``/etc`` from the host's).
- ``undeclared_mounts``: every mount of the container whose source is a host
  path that config.json does not name (nor the root): an engine or runtime
  that adds a bind mount of a host directory is caught, whatever the path.
- ``environ_view``: ``/proc/<pid>/environ``, with the values of variables
  config.json does not set withheld (they come from elsewhere: the runtime's
  environment, which must not end up in a matrix).
- ``namespace_links``: the host's own namespaces as their /proc links read
  (``pid:[4026531836]``), for ``{{host_ns_TYPE}}``: a container that must share
  one with the host (the config leaves it out) is compared with them.
- ``runtime_digest``: the sha256 of the runtime's executable (and of the
  interpreter a script runs under), before and after: CVE-2019-5736 rewrote it.

Standard library only: this runs where the runtime runs (the agent).
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import time
from pathlib import Path
from typing import Any, Iterable

#: the names ``host_setup: net_canary`` gives its canary links (``cfk`` + the maker's pid in six hex
#: digits + four random ones: a leak whose maker was killed is swept, one whose maker runs is its own),
#: and the route it lets a container add (its metric is the maker's pid × 1000 + a random 0–999)
CANARY_LINK = re.compile(r"^cfk(?P<pid>[0-9a-f]{6})[0-9a-f]{4}$")
CANARY_ROUTE_DEST = "198.51.100.0"        # TEST-NET-2 (RFC 5737): routed nowhere
CANARY_ROUTE_HEX = "006433C6"              # how /proc/net/route writes it (little-endian)
CANARY_METRIC_PER_PID = 1000               # pid_max (2**22) × 1000 fits a route's 32-bit metric
LINK_FACTS = ("cwd", "root", "exe")

#: file systems that are not a host path even when their superblock is shared with the host's
#: (sysfs without a network namespace, cgroup hierarchies, proc …): they are declared by type
PSEUDO_FS = frozenset("proc sysfs cgroup cgroup2 mqueue devpts bpf securityfs debugfs tracefs configfs fusectl "
                      "pstore efivarfs binfmt_misc nsfs hugetlbfs autofs rpc_pipefs selinuxfs".split())
#: device nodes a runtime binds from the host's /dev (a user namespace cannot mknod them)
DEFAULT_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")


#: the namespace types /proc/<pid>/ns names, as ``{{host_ns_TYPE}}`` does
NAMESPACE_LINKS = ("pid", "net", "ipc", "uts", "mnt", "cgroup", "user", "time")


def namespace_links() -> dict[str, str]:
    """{host_ns_TYPE: "TYPE:[inode]"} for the namespaces this process (the runtime's caller) is in."""
    out = {}
    for ns in NAMESPACE_LINKS:
        try:
            out[f"host_ns_{ns}"] = os.readlink(f"/proc/self/ns/{ns}")
        except OSError:  # a kernel without that namespace type
            continue
    return out


def own_variables() -> dict[str, str]:
    """What every bundle's variables hold about the host itself: its hostname and its namespaces.
    One definition for the executor, the bundle written ahead (ahead.py: it is used only if these
    are equal) and the benchmarks' yardstick (bare.py)."""
    return {"host_hostname": socket.gethostname(), **namespace_links()}


# -- routes and links ---------------------------------------------------------------------------
def canary_link_maker(name: str) -> int | None:
    """The pid of the process that named canary link ``name``, or None if it is no canary's name
    (pid 0 never makes one: such a name is someone else's)."""
    match = CANARY_LINK.match(name)
    return (int(match.group("pid"), 16) or None) if match else None


def canary_route_maker(metric: str) -> int | None:
    """The pid of the process that chose a canary route's ``metric``, or None if no canary has it
    (below CANARY_METRIC_PER_PID: pid 0)."""
    return int(metric) // CANARY_METRIC_PER_PID or None


def net_state(target: str, own: dict[str, str]) -> str:
    """The host's IPv4 and IPv6 routes, or its links, one sorted line each (``own``: this run's canary)."""
    if target == "routes":
        return "\n".join(sorted(_routes(own.get("net_canary_metric"))))
    if target == "links":
        return "\n".join(sorted(_links(own.get("net_canary_link"))))
    raise ValueError(f"host_unchanged: unknown target {target!r} (routes, links)")


def _routes(own_metric: str | None) -> Iterable[str]:
    """Destination, gateway, flags, metric and mask of each route (not its use counters)."""
    for line in _lines("/proc/net/route")[1:]:
        iface, dest, gw, flags, _ref, _use, metric, mask = line.split()[:8]
        if dest == CANARY_ROUTE_HEX and metric != own_metric:
            continue  # another run's canary
        yield f"ipv4 {iface} {dest}/{mask} via {gw} flags {flags} metric {metric}"
    for line in _lines("/proc/net/ipv6_route"):
        dest, plen, src, slen, hop, metric, _ref, _use, flags, iface = line.split()[:10]
        yield f"ipv6 {iface} {dest}/{plen} from {src}/{slen} via {hop} flags {flags} metric {metric}"


def _links(own_link: str | None) -> Iterable[str]:
    for name in os.listdir("/sys/class/net"):
        if CANARY_LINK.match(name) and name != own_link:
            continue  # another run's canary
        yield f"{_read(f'/sys/class/net/{name}/ifindex')}: {name}"


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except FileNotFoundError:  # no IPv6
        return []


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "?"


# -- /proc/<pid>/cwd, root, exe -----------------------------------------------------------------
def link_view(pid: int, name: str) -> str:
    """The link as the host reads it; for ``cwd`` a second line says whether it lies under the root."""
    text = os.readlink(f"/proc/{pid}/{name}")
    if name != "cwd":
        return text
    return f"{text}\nunder the container's root: {'yes' if _cwd_under_root(pid) else 'no'}"


#: ``proc: fd/N``: one descriptor of the init, read as its target and what the host knows of the file
FD_LINK = re.compile(r"^fd/(\d+)$")
#: the majors of Unix 98 pty slaves (UNIX98_PTY_SLAVE_MAJOR and the seven after it)
PTY_SLAVE_MAJORS = range(136, 144)


def fd_view(pid: int, fd: int) -> str:
    """The descriptor's target, then for a pty slave which devpts instance holds it: the container's
    own (its ``/dev/pts``), the host's (this process's ``/dev/pts``), or another one.

    The target's text cannot tell them apart (every instance names its ptys ``/dev/pts/N``); the
    device number of the file system can.
    """
    link = f"/proc/{pid}/fd/{fd}"
    text = os.readlink(link)
    st = os.stat(link)
    if not stat.S_ISCHR(st.st_mode) or os.major(st.st_rdev) not in PTY_SLAVE_MAJORS:
        return f"{text}\nnot a pty slave"
    if st.st_dev == _dev_of(f"/proc/{pid}/root/dev/pts"):
        whose = "the container's"
    elif st.st_dev == _dev_of("/dev/pts"):
        whose = "the host's"
    else:
        whose = "another"
    return f"{text}\npty slave {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} on {whose} devpts"


def _dev_of(path: str) -> int | None:
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def _cwd_under_root(pid: int, depth: int = 256) -> bool:
    """Walk ``..`` up from the process's cwd; True when the walk meets its root directory.

    The walk follows mounts upwards the way the kernel does, in the
    container's mount tree, and stops at the top of it (or at the harness's
    own root): a cwd on a host directory reaches the host's ``/`` without
    ever meeting the container's root.
    """
    root = os.stat(f"/proc/{pid}/root")
    here = os.open(f"/proc/{pid}/cwd", os.O_PATH | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            st = os.fstat(here)
            if (st.st_dev, st.st_ino) == (root.st_dev, root.st_ino):
                return True
            up = os.open("..", os.O_PATH | os.O_DIRECTORY, dir_fd=here)
            os.close(here)
            here = up
            top = os.fstat(here)
            if (top.st_dev, top.st_ino) == (st.st_dev, st.st_ino):
                return False
        return False
    finally:
        os.close(here)


# -- /proc/<pid>/environ ------------------------------------------------------------------------
def environ_view(pid: int, config: dict[str, Any]) -> str:
    """The init's environment, one ``NAME=VALUE`` line each; the value only for names process.env sets.

    A variable the config does not set came from somewhere else (the
    runtime's own environment, which may hold secrets): its name is evidence
    enough, its value stays out of the matrix.
    """
    declared = {e.partition("=")[0] for e in (config.get("process") or {}).get("env") or []}
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    for _ in range(50):  # read just as the exec switched the binary: the new stack's strings may not be set yet
        if raw or not declared:
            break
        time.sleep(0.002)
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    out = []
    for entry in raw.split(b"\0"):
        if entry:
            name, _, value = entry.decode(errors="replace").partition("=")
            out.append(f"{name}={value}" if name in declared else f"{name}=<not in config.json: value withheld>")
    return "\n".join(out)


# -- the container's mount table against config.json --------------------------------------------
class Mount:
    """One line of a mountinfo file: its device, the path inside its file system, where it is mounted."""

    def __init__(self, line: str) -> None:
        left, _, right = line.partition(" - ")
        fields = left.split()
        self.device, self.root, self.mountpoint = fields[2], _unescape(fields[3]), _unescape(fields[4])
        self.fstype = right.split()[0] if right else ""


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), path)


def _mounts(mountinfo: str) -> list[Mount]:
    return [Mount(line) for line in mountinfo.splitlines() if line.strip()]


def _under(path: str, top: str) -> bool:
    top = top.rstrip("/") or "/"
    return path == top or path.startswith(top + "/") or top == "/"


def host_paths(mount: Mount, host: list[Mount]) -> list[str]:
    """The host paths a container mount shows: through every host mount of the same file system that
    holds its root.  Empty for a file system the host has not mounted (a tmpfs made for the container)."""
    found = []
    for hm in host:
        if hm.device == mount.device and _under(mount.root, hm.root):
            rest = mount.root[len(hm.root.rstrip("/")):] if hm.root != "/" else mount.root
            found.append(os.path.normpath(hm.mountpoint.rstrip("/") + "/" + rest.lstrip("/")))
    return found


def declared_sources(config: dict[str, Any], rootfs: str) -> list[str]:
    """Host paths config.json names: the root, every bind mount's source, the devices it lists."""
    named = [os.path.realpath(rootfs)]
    for m in config.get("mounts") or []:
        if m.get("type") == "bind" or {"bind", "rbind"} & set(m.get("options") or []):
            named.append(os.path.realpath(m.get("source", "")))
    named += [d["path"] for d in (config.get("linux") or {}).get("devices") or [] if d.get("path")]
    return named + list(DEFAULT_DEVICES)


def undeclared_mounts(pid: int, config: dict[str, Any], rootfs: str) -> str:
    """One line per mount inside whose source is a host path that config.json does not name; empty if none."""
    return undeclared(Path(f"/proc/{pid}/mountinfo").read_text(), Path("/proc/self/mountinfo").read_text(),
                      config, rootfs)


def undeclared(container_mountinfo: str, host_mountinfo: str, config: dict[str, Any], rootfs: str) -> str:
    """``undeclared_mounts`` from the two mount tables as text."""
    host = _mounts(host_mountinfo)
    named = declared_sources(config, rootfs)
    out = []
    for mount in _mounts(container_mountinfo):
        if mount.fstype in PSEUDO_FS:
            continue
        paths = host_paths(mount, host)
        if paths and not any(_under(p, n) for p in paths for n in named if n != "/"):
            out.append(f"{mount.mountpoint}: host path {paths[0]} ({mount.fstype}), not in config.json")
    return "\n".join(out)


# -- the runtime's executable -------------------------------------------------------------------
def runtime_digest(path: str) -> str:
    """``sha256  path`` of the runtime's executable, and of its interpreter when it is a script
    (/proc/<pid>/exe of a Python runtime is the interpreter)."""
    files = [os.path.realpath(path)]
    with open(files[0], "rb") as f:
        head = f.read(256)
    if head.startswith(b"#!"):
        interpreter = head[2:].split(b"\n", 1)[0].split()
        if interpreter:
            files.append(os.path.realpath(interpreter[0].decode(errors="replace")))
    return "\n".join(f"{_sha256(p)}  {p}" for p in files)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- what is read before the container, to compare after --------------------------------------
#: the host facts whose values ``before`` reads (a bundle of a scenario with one is never written ahead)
READ_BEFORE = ("host_unchanged", "runtime_binary_unchanged")


def before(kinds: Iterable[tuple[str, str]], variables: dict[str, str], runtime_path: str) -> dict[str, str]:
    """The values that self-judged facts compare against, read before the container exists.

    ``kinds`` are (kind, target) of the scenario's host facts; the result joins
    the bundle's variables (``host_routes``, ``host_links``, ``runtime_digest``).
    """
    out: dict[str, str] = {}
    for kind, target in kinds:
        if kind == "host_unchanged":
            out[f"host_{target}"] = net_state(target, variables)
        elif kind == "runtime_binary_unchanged":
            out["runtime_path"] = runtime_path
            out["runtime_digest"] = runtime_digest(runtime_path)
    return out
