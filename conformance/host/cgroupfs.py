"""cgroup files by meaning, on v1, hybrid and v2 hosts.

A scenario says ``memory.oom_kill``; this module knows that a v1 host keeps
it as the ``oom_kill`` line of ``memory.oom_control`` in the memory hierarchy
and a v2 host as the ``oom_kill`` line of ``memory.events`` in the unified
one.  The container's cgroup paths are read from ``/proc/<pid>/cgroup`` on
the host while the container exists, so the harness never guesses how a
runtime names its cgroups.
"""
from __future__ import annotations

import ctypes
import os
import platform
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CgroupFile:
    """Where one logical value lives: controller, file, and optional key/field."""

    controller: str          # v1 hierarchy name; "" = the unified (v2) hierarchy
    file: str
    key: str | None = None   # "key value" line to pick
    field: int | None = None  # whitespace-separated field to pick


#: what a v2 cgroup's device rules are read as: the eBPF programs attached (BPF_PROG_QUERY)
DEVICE_PROGRAMS = "<bpf device programs>"
#: every device allowed, as v1's devices.list writes it (and as a v2 cgroup without a program is read)
ALL_DEVICES = "a *:* rwm"

V1_CONTROLLERS = frozenset("cpuset cpu cpuacct blkio memory devices freezer net_cls perf_event "
                           "net_prio hugetlb pids rdma misc".split())

#: logical name -> (v1 location, v2 location)
VALUES: dict[str, tuple[CgroupFile, CgroupFile]] = {
    "memory.oom_kill": (CgroupFile("memory", "memory.oom_control", key="oom_kill"),
                        CgroupFile("", "memory.events", key="oom_kill")),
    "memory.limit": (CgroupFile("memory", "memory.limit_in_bytes"), CgroupFile("", "memory.max")),
    "memory.swap_limit": (CgroupFile("memory", "memory.memsw.limit_in_bytes"),
                          CgroupFile("", "memory.swap.max")),
    "pids.max": (CgroupFile("pids", "pids.max"), CgroupFile("", "pids.max")),
    "pids.events_max": (CgroupFile("pids", "pids.events", key="max"),
                        CgroupFile("", "pids.events", key="max")),
    "pids.current": (CgroupFile("pids", "pids.current"), CgroupFile("", "pids.current")),
    "cpu.quota": (CgroupFile("cpu", "cpu.cfs_quota_us"), CgroupFile("", "cpu.max", field=0)),
    "cpu.period": (CgroupFile("cpu", "cpu.cfs_period_us"), CgroupFile("", "cpu.max", field=1)),
    "cpu.weight_or_shares": (CgroupFile("cpu", "cpu.shares"), CgroupFile("", "cpu.weight")),
    "cpu.nr_throttled": (CgroupFile("cpu", "cpu.stat", key="nr_throttled"),
                         CgroupFile("", "cpu.stat", key="nr_throttled")),
    # v1: FROZEN / FREEZING / THAWED; v2: the "frozen" line of cgroup.events, 1 / 0
    "freezer.state": (CgroupFile("freezer", "freezer.state"), CgroupFile("", "cgroup.events", key="frozen")),
    # one "MAJ:MIN value" line per device on v1; "MAJ:MIN rbps=value wbps=… …" on v2
    "io.read_bps_device": (CgroupFile("blkio", "blkio.throttle.read_bps_device"), CgroupFile("", "io.max")),
    # v1: the allow-list ("a *:* rwm" = every device); v2 has no file: see device_programs
    "devices.rules": (CgroupFile("devices", "devices.list"), CgroupFile("", DEVICE_PROGRAMS)),
    "cpuset.cpus": (CgroupFile("cpuset", "cpuset.cpus"), CgroupFile("", "cpuset.cpus")),
    "cpuset.mems": (CgroupFile("cpuset", "cpuset.mems"), CgroupFile("", "cpuset.mems")),
    # v2 only (linux.resources.unified writes it)
    "memory.high": (CgroupFile("memory", "memory.high"), CgroupFile("", "memory.high")),
    # the soft limit: what memory.reservation sets
    "memory.reservation": (CgroupFile("memory", "memory.soft_limit_in_bytes"), CgroupFile("", "memory.low")),
    # v1 only (v2 has neither file): a scenario that reads them requires cgroup-v1
    "memory.swappiness": (CgroupFile("memory", "memory.swappiness"), CgroupFile("", "memory.swappiness")),
    "memory.oom_kill_disable": (CgroupFile("memory", "memory.oom_control", key="oom_kill_disable"),
                                CgroupFile("", "memory.oom_control")),
    # BFQ's weight (CFQ, and blkio.weight with it, left the kernel in 5.0); v2 reads "default N"
    "io.bfq_weight": (CgroupFile("blkio", "blkio.bfq.weight"), CgroupFile("", "io.bfq.weight")),
    "io.write_bps_device": (CgroupFile("blkio", "blkio.throttle.write_bps_device"), CgroupFile("", "io.max")),
    "io.read_iops_device": (CgroupFile("blkio", "blkio.throttle.read_iops_device"), CgroupFile("", "io.max")),
    "io.write_iops_device": (CgroupFile("blkio", "blkio.throttle.write_iops_device"), CgroupFile("", "io.max")),
    "hugetlb.2MB.limit": (CgroupFile("hugetlb", "hugetlb.2MB.limit_in_bytes"), CgroupFile("", "hugetlb.2MB.max")),
    "cpu.burst": (CgroupFile("cpu", "cpu.cfs_burst_us"), CgroupFile("", "cpu.max.burst")),
    "cpu.idle": (CgroupFile("cpu", "cpu.idle"), CgroupFile("", "cpu.idle")),
    # realtime group scheduling has no v2 interface
    "cpu.rt_runtime": (CgroupFile("cpu", "cpu.rt_runtime_us"), CgroupFile("", "cpu.rt_runtime_us")),
    "cpu.rt_period": (CgroupFile("cpu", "cpu.rt_period_us"), CgroupFile("", "cpu.rt_period_us")),
}


def mounts(mountinfo: str | None = None) -> dict[str, Path]:
    """Map each v1 controller (and "" for cgroup2) to its mount point on the host."""
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    found: dict[str, Path] = {}
    for line in text.splitlines():
        if " - cgroup" not in line:  # most lines: skipped before they are split
            continue
        left, _, right = line.partition(" - ")
        fstype, _source, options = (right.split() + ["", "", ""])[:3]
        if fstype == "cgroup2":
            found.setdefault("", Path(left.split()[4]))
        elif fstype == "cgroup":  # a Path only for these: a container's host has hundreds of other lines
            mountpoint = Path(left.split()[4])
            for opt in options.split(","):
                if opt in V1_CONTROLLERS or opt.startswith("name="):
                    found.setdefault(opt, mountpoint)
    return found


def layout(mount_map: dict[str, Path] | None = None) -> str:
    """"v1", "v2" or "hybrid" (v1 controllers plus a cgroup2 mount)."""
    m = mounts() if mount_map is None else mount_map
    has_v2, has_v1 = "" in m, any(k and not k.startswith("name=") for k in m)
    if has_v2 and not has_v1:
        return "v2"
    return "hybrid" if has_v2 else "v1"


def v2_controllers(mount_map: dict[str, Path] | None = None) -> set[str]:
    m = mounts() if mount_map is None else mount_map
    if "" not in m:
        return set()
    try:
        return set((m[""] / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def process_cgroups(pid: int) -> dict[str, str]:
    """Controller -> cgroup path of a process, as the host sees it ("" = unified)."""
    paths: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _hid, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def locate(name: str, proc_paths: dict[str, str], mount_map: dict[str, Path]) -> tuple[Path, CgroupFile]:
    """The host file holding logical value ``name`` for a process's cgroups.

    A controller bound to v1 wins (hybrid hosts keep memory, pids, cpu there);
    otherwise the unified hierarchy is used.
    """
    v1, v2 = VALUES[name]
    if v1.controller in mount_map and v1.controller in proc_paths:
        where = v1
    elif "" in mount_map and "" in proc_paths:
        where = v2
    else:
        raise LookupError(f"no {v1.controller} controller is mounted on this host")
    rel = proc_paths[where.controller].lstrip("/")
    return mount_map[where.controller] / rel / where.file, where


def read_value(name: str, proc_paths: dict[str, str], mount_map: dict[str, Path]) -> str:
    """Read logical value ``name``; raises OSError/LookupError with the path it tried."""
    path, where = locate(name, proc_paths, mount_map)
    if where.file == DEVICE_PROGRAMS:
        return device_programs(path.parent)
    text = path.read_text()
    if where.key is not None:
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[0] == where.key:
                return parts[1]
        raise LookupError(f"{path} has no {where.key!r} line")
    if where.field is not None:
        return text.split()[where.field]
    return text.strip()


def _thaw(directory: Path) -> None:
    """Thaw a cgroup a runtime left frozen (v1 freezer.state, v2 cgroup.freeze); quiet elsewhere."""
    for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
        try:
            (directory / name).write_text(value)
        except OSError:
            pass
SYS_BPF = {"x86_64": 321, "aarch64": 280}
BPF_PROG_QUERY, BPF_CGROUP_DEVICE, BPF_F_QUERY_EFFECTIVE = 16, 6, 1


def device_programs(cgroup_dir: Path) -> str:
    """A v2 cgroup's device rules, as far as the host can read them: the eBPF programs in effect there.

    The rules are compiled into the programs, so what is told is whether
    (and which) ``BPF_CGROUP_DEVICE`` programs apply to the cgroup, its own
    or inherited (``BPF_F_QUERY_EFFECTIVE``); none reads as v1's "every device".
    """
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        raise LookupError(f"bpf(2) is not known here ({platform.machine()})")
    libc = ctypes.CDLL(None, use_errno=True)
    ids = (ctypes.c_uint32 * 64)()
    fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        attr = (fd.to_bytes(4, "little") + BPF_CGROUP_DEVICE.to_bytes(4, "little")
                + BPF_F_QUERY_EFFECTIVE.to_bytes(4, "little") + bytes(4)
                + ctypes.addressof(ids).to_bytes(8, "little") + (64).to_bytes(4, "little")).ljust(40, b"\0")
        buf = ctypes.create_string_buffer(attr, len(attr))
        if libc.syscall(ctypes.c_long(nr), ctypes.c_int(BPF_PROG_QUERY), buf, ctypes.c_uint(len(attr))) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"bpf(BPF_PROG_QUERY) on {cgroup_dir}: {os.strerror(err)}")
    finally:
        os.close(fd)
    count = int.from_bytes(buf.raw[24:28], "little")
    if not count:
        return ALL_DEVICES
    return "\n".join(f"bpf device program id {ids[i]}" for i in range(min(count, 64)))


def existing_dirs(cgroups_path: str, mount_map: dict[str, Path] | None = None) -> list[str]:
    """The directories at an absolute ``cgroups_path`` in each hierarchy mounted here (none once
    a runtime removed its container's cgroups)."""
    m = mounts() if mount_map is None else mount_map
    rel = cgroups_path.strip("/")
    return [str(mp / rel) for mp in sorted(set(m.values())) if rel and (mp / rel).is_dir()]


def remove_leftovers(cgroups_path: str, mount_map: dict[str, Path] | None = None) -> list[str]:
    """After delete, a container's cgroups must be gone: remove and report any that are not.

    ``cgroups_path`` is the one the harness wrote into config.json, so every
    directory found there is the container's own; processes still in it are
    the container's and are killed first (a directory with tasks cannot go).
    """

    m = mounts() if mount_map is None else mount_map
    rel = cgroups_path.strip("/")
    if not rel:
        return []
    tops = [Path(top) for top in sorted({f"{mountpoint}/{rel}" for mountpoint in m.values()}) if os.path.isdir(top)]
    for top in tops:  # first: a frozen task does not die of SIGKILL (v1) until thawed
        _thaw(top)
    leaks = []
    for top in tops:
        leaks.append(str(top))
        for d in sorted([top, *(p for p in top.rglob("*") if p.is_dir())], key=lambda p: -len(p.parts)):
            for pid in (d / "cgroup.procs").read_text().split() if (d / "cgroup.procs").exists() else []:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except OSError:
                    time.sleep(0.01)
    return leaks
