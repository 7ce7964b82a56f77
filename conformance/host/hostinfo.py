"""What the host offers: its profile for the matrix, and the requirement checks.

A scenario's ``requires`` names host facts from a closed vocabulary; when one
is missing the scenario is skipped with a sentence saying which, so a host
limit is never reported as a runtime failure.
"""
from __future__ import annotations

import functools
import os
import platform
import shutil
from pathlib import Path
from typing import Callable

from . import bridge_net, cgroupfs


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def profile() -> dict[str, object]:
    """The host section of the matrix: kernel, cgroup layout, distribution."""
    mount_map = cgroupfs.mounts()
    os_release = dict(
        line.split("=", 1) for line in (_read("/etc/os-release") or "").splitlines() if "=" in line)
    return {
        "kernel": platform.release(),
        "arch": platform.machine(),
        "os": os_release.get("PRETTY_NAME", "").strip('"'),
        "cgroup": cgroupfs.layout(mount_map),
        "cgroup_v1_controllers": sorted(k for k in mount_map if k and not k.startswith("name=")),
        "cgroup_v2_controllers": sorted(cgroupfs.v2_controllers(mount_map)),
        "cpus": os.cpu_count(),
        "userns": _userns_enabled(),
        "timens": Path("/proc/self/ns/time").exists(),
    }


def _userns_enabled() -> bool:
    value = _read("/proc/sys/user/max_user_namespaces")
    return value is not None and value != "0"


def _controller(name: str) -> Callable[[], str | None]:
    def check() -> str | None:
        mount_map = cgroupfs.mounts()
        if name in mount_map or name in cgroupfs.v2_controllers(mount_map):
            return None
        v1_name = {"io": "blkio"}.get(name)
        if v1_name and v1_name in mount_map:
            return None
        return f"the host has no {name} cgroup controller mounted"
    return check


def _swap_accounting() -> str | None:
    mount_map = cgroupfs.mounts()
    if "memory" in mount_map:
        if (mount_map["memory"] / "memory.memsw.limit_in_bytes").exists():
            return None
        return "the v1 memory controller has no memsw files (swap accounting is off: swapaccount=1)"
    if "memory" in cgroupfs.v2_controllers(mount_map):
        return None
    return "the host has no memory cgroup controller"


def _kexec_load_unlimited() -> str | None:
    # kexec_load counts a load against these limits before it looks at its arguments
    for kind in ("reboot", "panic"):
        value = _read(f"/proc/sys/kernel/kexec_load_limit_{kind}")
        if value not in (None, "-1"):
            return f"kernel.kexec_load_limit_{kind} is {value}: a probe would use up one of the host's kexec loads"
    return None


def _kexec_load() -> str | None:
    # without it every kexec_load answers ENOSYS (or EPERM when disabled), filter or not: refusing it proves nothing
    value = _read("/proc/sys/kernel/kexec_load_disabled")
    if value is None:
        return "the kernel has no kexec_load (CONFIG_KEXEC is off): every call answers ENOSYS, filtered or not"
    if value != "0":
        return "kernel.kexec_load_disabled is set: the kernel refuses every kexec_load itself, filtered or not"
    return None


def _sys_firmware() -> str | None:
    try:
        return None if any(Path("/sys/firmware").iterdir()) else "the host's /sys/firmware is empty"
    except OSError:
        return "the host has no /sys/firmware"


def _overlayfs() -> str | None:
    if any(line.split()[-1:] == ["overlay"] for line in (_read("/proc/filesystems") or "").splitlines()):
        return None
    if Path(f"/lib/modules/{platform.release()}/kernel/fs/overlayfs").is_dir():  # loaded by the first mount
        return None
    return "the kernel has no overlay file system (CONFIG_OVERLAY_FS; modprobe overlay)"


def _host_nic() -> str | None:
    """A network scenario that sees only loopback inside proves nothing on a host that has only loopback."""
    try:
        names = [n for n in os.listdir("/sys/class/net") if n != "lo"]
    except OSError as exc:
        return f"/sys/class/net cannot be read ({exc.strerror})"
    return None if names else "the host has no network interface but loopback"


def _host_route() -> str | None:
    """A scenario that finds no route inside proves nothing on a host that has none either."""
    routes = (_read("/proc/net/route") or "").splitlines()[1:]
    return None if routes else "the host's main IPv4 routing table is empty (/proc/net/route)"


def _hugetlb() -> str | None:
    """hugetlb where a runtime sets limits: a v1 hierarchy, or the cgroup2 one of a pure v2 host (a
    hybrid host's cgroup2 hierarchy holds no container: runtimes write v1 limits there)."""
    mount_map = cgroupfs.mounts()
    if "hugetlb" in mount_map:
        return None
    if "hugetlb" in cgroupfs.v2_controllers(mount_map):
        if cgroupfs.layout(mount_map) == "v2":
            return None
        return "the hugetlb controller is in the cgroup2 hierarchy of a hybrid host, where runtimes place no container"
    return "the host has no hugetlb cgroup controller mounted"


def _multi_cpu() -> str | None:
    """A cpuset of one CPU out of one confines nothing: the check could not fail."""
    try:
        usable = len(os.sched_getaffinity(0))
    except OSError:
        usable = os.cpu_count() or 1
    return None if usable >= 2 else f"the harness may run on {usable} CPU only: pinning to one proves nothing"


def _hugepages_2mb() -> str | None:
    if Path("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir():
        return None
    return "the kernel offers no 2 MB huge pages (/sys/kernel/mm/hugepages/hugepages-2048kB)"


def _cpu_file(v1: str, v2: str, what: str) -> Callable[[], str | None]:
    """A cpu controller knob a kernel may lack (it is in the root's cpu directory, v1, or the
    cgroup2 root's cgroup.controllers says cpu and the file is in every child, v2)."""
    def check() -> str | None:
        m = cgroupfs.mounts()
        if "cpu" in m:
            return None if (m["cpu"] / v1).exists() else f"the v1 cpu controller has no {v1} ({what})"
        if "cpu" in cgroupfs.v2_controllers(m):
            return None if (m[""] / "cpu.stat").exists() and _kernel_at_least(*_V2_KNOB_SINCE[v2]) else \
                f"the kernel has no {v2} ({what}; Linux {'.'.join(map(str, _V2_KNOB_SINCE[v2]))}+)"
        return "the host has no cpu cgroup controller"
    return check


#: the kernel release that brought a v2 cpu knob (the root has none to look at)
_V2_KNOB_SINCE = {"cpu.max.burst": (5, 14), "cpu.idle": (5, 15)}


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        have = tuple(int(x) for x in platform.release().split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return have >= (major, minor)


def _rt_group_sched() -> str | None:
    m = cgroupfs.mounts()
    if "cpu" in m and (m["cpu"] / "cpu.rt_runtime_us").exists():
        return None
    return "no cgroup v1 cpu controller with realtime group scheduling (cpu.rt_runtime_us; CONFIG_RT_GROUP_SCHED)"


def _io_bfq() -> str | None:
    """BFQ's weight files exist once the scheduler is in the kernel (built in, or its module loaded)."""
    try:
        offered = " ".join(p.read_text() for p in Path("/sys/block").glob("*/queue/scheduler"))
    except OSError:
        offered = ""
    return None if "bfq" in offered else "no block device offers the BFQ I/O scheduler (io weights need it)"


def _apparmor() -> str | None:
    """A profile can be loaded and entered: the LSM is on, securityfs is there, and so is the parser."""
    if _read("/sys/module/apparmor/parameters/enabled") != "Y":
        return "the kernel's AppArmor is off (not built in, or not enabled: apparmor=1 security=apparmor)"
    if not Path("/sys/kernel/security/apparmor").is_dir():
        return "securityfs is not mounted at /sys/kernel/security: no AppArmor profile can be loaded"
    if shutil.which("apparmor_parser") is None:
        return "apparmor_parser is not installed (Debian package apparmor)"
    return None


def _caller_nnp_clear() -> str | None:
    """With no_new_privs on the caller every process it starts has it too: a container could not show it clear."""
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith("NoNewPrivs:"):
            return None if line.split()[1] == "0" else "the harness itself runs with no_new_privs set (inherited by every runtime)"
    return "the kernel shows no NoNewPrivs line in /proc/self/status"


#: requirement name -> check returning None when met, else the reason to skip
REQUIREMENTS: dict[str, Callable[[], str | None]] = {
    "cgroup-v1": lambda: None if cgroupfs.layout() in ("v1", "hybrid") else "the host has no cgroup v1 hierarchies (pure v2)",
    "cgroup-v2": lambda: None if cgroupfs.layout() == "v2" else f"the host is cgroup {cgroupfs.layout()}, not pure v2",
    "userns": lambda: None if _userns_enabled() else "user namespaces are disabled (user.max_user_namespaces = 0)",
    "timens": lambda: None if Path("/proc/self/ns/time").exists() else "the kernel has no time namespace (needs 5.6+)",
    "cgroupns": lambda: None if Path("/proc/self/ns/cgroup").exists() else "the kernel has no cgroup namespace",
    "swap-accounting": _swap_accounting,
    "proc-kcore": lambda: None if Path("/proc/kcore").exists() else "the kernel has no /proc/kcore (CONFIG_PROC_KCORE is off)",
    "proc-sysrq-trigger": lambda: None if Path("/proc/sysrq-trigger").exists() else "the kernel has no /proc/sysrq-trigger (CONFIG_MAGIC_SYSRQ is off)",
    "loop-device": lambda: None if Path("/sys/dev/block/7:0").exists() else "the host has no block device 7:0 (loop0; modprobe loop)",
    "loop-control": lambda: None if Path("/sys/dev/char/10:237").exists() else "the host has no character device 10:237 (loop-control; modprobe loop)",
    "proc-keys": lambda: None if Path("/proc/keys").exists() else "the kernel has no /proc/keys (CONFIG_KEYS is off)",
    "proc-irq": lambda: None if Path("/proc/irq/default_smp_affinity").exists() else "the kernel has no /proc/irq/default_smp_affinity",
    "sys-firmware": _sys_firmware,
    "kexec-load": _kexec_load,
    "x86_64": lambda: None if platform.machine() == "x86_64" else f"the host is {platform.machine()}, the syscall probe is x86-64 code",
    "kexec-load-unlimited": _kexec_load_unlimited,
    "overlayfs": _overlayfs,
    "veth-bridge": bridge_net.unsupported,
    "host-nic": _host_nic,
    "host-route": _host_route,
    "proc-timer-list": lambda: None if Path("/proc/timer_list").exists() else "the kernel has no /proc/timer_list",
    # a host always offers it; a lane that runs every container in a user namespace of its own does not
    # (the rootless lane: LaneNeeds.refuses)
    "initial-userns": lambda: None,
    # a host always gives a container a cgroup of its own; the rootless lane without delegation does not
    "own-cgroup": lambda: None,
    **{f"controller:{c}": _controller(c) for c in ("memory", "pids", "cpu", "io", "cpuset")},
    "controller:hugetlb": _hugetlb,
    "multi-cpu": _multi_cpu,
    "hugepages-2MB": _hugepages_2mb,
    "cpu-burst": _cpu_file("cpu.cfs_burst_us", "cpu.max.burst", "CFS burst, Linux 5.14+"),
    "cpu-idle": _cpu_file("cpu.idle", "cpu.idle", "SCHED_IDLE groups, Linux 5.15+"),
    "rt-group-sched": _rt_group_sched,
    "io-bfq": _io_bfq,
    "numa": lambda: None if Path("/proc/self/numa_maps").exists() else "the kernel has no NUMA support (CONFIG_NUMA: no /proc/<pid>/numa_maps)",
    "caller-nnp-clear": _caller_nnp_clear,
    "apparmor": _apparmor,
    "selinux": lambda: None if Path("/sys/fs/selinux/enforce").exists() else "SELinux is not enabled on this host (no /sys/fs/selinux)",
}


def unmet(requires: tuple[str, ...]) -> str | None:
    """The first unmet requirement's reason, or None when the host has them all."""
    for name in requires:
        reason = REQUIREMENTS[name]()
        if reason:
            return f"host lacks {name}: {reason}"
    return None
