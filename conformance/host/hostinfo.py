"""What the host offers: its profile for the matrix, and the requirement checks.

A scenario's ``requires`` names host facts from a closed vocabulary; when one
is missing the scenario is skipped with a sentence saying which, so a host
limit is never reported as a runtime failure.
"""
from __future__ import annotations

import functools
import os
import platform
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
    **{f"controller:{c}": _controller(c) for c in ("memory", "pids", "cpu", "io")},
}


def unmet(requires: tuple[str, ...]) -> str | None:
    """The first unmet requirement's reason, or None when the host has them all."""
    for name in requires:
        reason = REQUIREMENTS[name]()
        if reason:
            return f"host lacks {name}: {reason}"
    return None
