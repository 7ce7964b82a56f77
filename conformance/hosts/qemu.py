"""Boot a throw-away guest with a chosen cgroup layout, and reach it like any ssh host.

``qemu://cgroup-v2`` / ``qemu://cgroup-v1``: a Debian kernel (the package's
files are unpacked into the cache, never installed), an initramfs made here
from busybox-static and the few modules needed to mount this machine's root
read-only over virtio-9p, tmpfs on /tmp /run /root, /etc an overlay in memory
(the rootless lane adds users there), the named cgroup layout,
and sshd (this machine's openssh-server binary) with a key pair and host key
made per guest.  The guest listens only through qemu's ``hostfwd`` on
127.0.0.1 and its user network is restricted (no route out).  Nothing is
persistent: stopping the guest is killing qemu; the temp dir goes with it.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import io
import lzma
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import testinfra

from conformance.host.ahead import Next
from conformance.host.rootfs import find_static_busybox
from conformance.model.cache_dir import cache_root
from conformance.model.errors import ConformanceError
from conformance.model.records import Execution, HostDescription
from conformance.model.scenario import Scenario

from .agent_link import AgentLink
from .targets import HostError, RemoteTarget, agent_zip

LAYOUTS = ("cgroup-v2", "cgroup-v1")
#: what the initramfs needs to mount the 9p root and bring up the NIC (dependencies follow modules.dep),
#: and overlayfs for scenarios on a layered image (their requirement overlayfs)
INITRAMFS_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "virtio_net", "overlay")
V1_CONTROLLERS = ("cpu,cpuacct", "memory", "pids", "blkio", "devices", "freezer", "cpuset", "net_cls,net_prio",
                  "perf_event", "hugetlb", "rdma", "misc")
BOOT_TIMEOUT_KVM_S, BOOT_TIMEOUT_TCG_S = 60.0, 240.0
#: how often the boot's progress is looked at (the console file, then sshd's banner): each look is a
#: small file read here, and every poll period is up to that much added to the boot
BOOT_POLL_S = 0.02
#: kernel parameters that save seconds under emulation and change nothing a scenario looks at:
#: no CPU vulnerability mitigations (a throw-away guest running this machine's own binaries);
#: the TSC trusted (every vCPU's comes from qemu's one clock): no sync check that fails spuriously
#: under TCG and falls back to the HPET, whose every read is an exit to qemu's device model;
#: no self-tests of every crypto algorithm at boot (~0.4 s under TCG; nothing here depends on them);
#: PCI interrupts routed without ACPI's interpreter (acpi=noirq: the firmware's routing table and the
#: I/O APIC): evaluating each virtio device's ACPI link object took ~0.17 s under TCG, 0.5 s a boot
FAST_BOOT_CMDLINE = ("mitigations=off", "tsc=reliable", "cryptomgr.notests", "acpi=noirq")
#: the emulated CPU: everything TCG offers except the "fast string" flags.  With ERMS (or FSRM) the
#: kernel's and glibc's copies and clears use ``rep movsb``/``rep stosb``, which TCG executes one byte
#: per step: measured in a guest here, reading /dev/zero ran at 390 MB/s with them and 2.6 GB/s
#: without, a file read over 9p 98 against 401 MB/s, Python copying 64 KiB buffers 1.03 against
#: 0.50 s; the boot to sshd and the agent's first start follow
TCG_CPU = "max,-erms,-fsrm"
#: a firmware that only loads the kernel (qemu-system-data's qboot): SeaBIOS's POST, PCI scan and
#: option ROMs take seconds under TCG; without the file the default firmware boots the guest
QBOOT = Path("/usr/share/qemu/qboot.rom")
#: console lines that mark a boot's progress (the kernel's own only with OCI_CONFORMANCE_QEMU_VERBOSE=1)
BOOT_MILESTONES = (("kernel", "Linux version"), ("init", "CONFORMANCE-GUEST-INIT"),
                   ("root", "CONFORMANCE-GUEST-ROOT"), ("ready", "CONFORMANCE-GUEST-READY"))
PR_SET_PDEATHSIG = 1
#: where the guest mounts its share (the init script's ``$R/run/conformance``), and the agent zip in it
GUEST_SHARE, GUEST_AGENT_ZIP = "/run/conformance", "agent.pyz"


class _KvmFailed(Exception):
    """KVM could not run the guest on this machine; retried under TCG."""


KVM_SILENCE_S = 15.0
_KVM_BROKEN = cache_root() / "qemu-kvm-broken"


class GuestError(ConformanceError):
    """The guest could not be prepared or did not boot; says why (with the console's last lines)."""


# -- the kernel ----------------------------------------------------------------
@dataclass(frozen=True)
class Kernel:
    image: Path            # bzImage
    modules: Path          # .../lib/modules/<version>
    version: str


APT_LISTS = Path("/var/lib/apt/lists")


def _apt_lists_key() -> str:
    """What apt's answer depends on: the package lists' names, sizes and times (cheap to read)."""
    try:
        entries = sorted(os.scandir(APT_LISTS), key=lambda e: e.name)
    except OSError:
        return ""
    return hashlib.sha256("".join(f"{e.name}:{e.stat().st_size}:{e.stat().st_mtime_ns}\n"
                                  for e in entries if e.is_file()).encode()).hexdigest()[:16]


def _newest_kernel_package() -> str:
    """The newest kernel package apt knows, remembered until apt's lists change.

    ``apt-cache search`` takes ~0.8 s here; asked at every boot it was a fifth
    of the time to a usable guest under TCG.
    """
    key, remembered = _apt_lists_key(), cache_root() / "kernels" / "newest-package"
    with contextlib.suppress(OSError, ValueError):
        known_key, name = remembered.read_text().split()
        if key and known_key == key:
            return name
    name = _search_newest_kernel_package()
    if key:
        remembered.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(remembered, f"{key} {name}\n".encode())
    return name


def _search_newest_kernel_package() -> str:
    out = subprocess.run(["apt-cache", "search", "--names-only", r"^linux-image-[0-9.]+-[0-9]+-amd64-unsigned$"],
                         capture_output=True, text=True).stdout
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    if not names:
        raise GuestError("no linux-image-*-amd64-unsigned package known to apt (run apt-get update, or give "
                         "--qemu-kernel PATH)")
    return max(names, key=lambda n: [int(x) for x in re.findall(r"\d+", n)])


def kernel_from_package(package: str | None = None) -> Kernel:
    """Unpack a Debian kernel package into the cache (once) and index its modules."""
    package = package or os.environ.get("OCI_CONFORMANCE_KERNEL_PACKAGE") or _newest_kernel_package()
    target = cache_root() / "kernels" / package
    if not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        try:
            subprocess.run(["apt-get", "download", package], cwd=target, check=True, capture_output=True, text=True)
            (deb,) = target.glob("*.deb")
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True, capture_output=True)
            deb.unlink()
            version = next((target / "lib" / "modules").iterdir()).name
            subprocess.run(["depmod", "-b", str(target), version], check=True, capture_output=True)
        except (subprocess.CalledProcessError, ValueError, StopIteration) as exc:
            shutil.rmtree(target, ignore_errors=True)
            detail = getattr(exc, "stderr", "") or exc
            raise GuestError(f"cannot unpack kernel package {package}: {detail}") from None
        (target / ".complete").touch()
    version = next((target / "lib" / "modules").iterdir()).name
    return Kernel(target / "boot" / f"vmlinuz-{version}", target / "lib" / "modules" / version, version)


def bzimage_version(image: Path) -> str:
    """The version string a bzImage carries in its setup header."""
    data = image.read_bytes()[:0x10000]
    offset = int.from_bytes(data[0x20E:0x210], "little") + 0x200
    return data[offset:offset + 64].split(b" ")[0].decode(errors="replace")


def kernel_from_path(image: Path) -> Kernel:
    if not image.is_file():
        raise GuestError(f"--qemu-kernel {image}: no such file")
    version = bzimage_version(image)
    for modules in (image.parent.parent / "lib" / "modules" / version, Path("/lib/modules") / version):
        if modules.is_dir():
            return Kernel(image, modules, version)
    raise GuestError(f"--qemu-kernel {image}: no modules for {version} beside it (../lib/modules/{version}) "
                     f"or in /lib/modules/{version}")


def resolve_kernel(choice: str | None) -> Kernel:
    """``--qemu-kernel``: a bzImage path, a Debian package name, or (default) the newest package."""
    if choice and ("/" in choice or Path(choice).is_file()):
        return kernel_from_path(Path(choice))
    return kernel_from_package(choice)


# -- the image qemu boots: the uncompressed kernel, entered through PVH -------------------
XZ_MAGIC = b"\xfd7zXZ\x00"
#: the ELF note a kernel built with CONFIG_PVH carries: its 32-bit entry point for a direct boot
XEN_ELFNOTE_PHYS32_ENTRY = 18


def has_pvh_entry(elf: bytes) -> bool:
    """Whether an ELF kernel has the Xen PVH entry note qemu's ``-kernel`` needs to boot it directly."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:  # 64-bit ELF only
        return False
    phoff, phentsize, phnum = struct.unpack_from("<Q", elf, 0x20)[0], *struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        pos, end = p_offset, p_offset + p_filesz
        while p_type == 4 and pos + 12 <= end:  # PT_NOTE: namesz, descsz, type, name, desc (4-aligned)
            namesz, descsz, kind = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and kind == XEN_ELFNOTE_PHYS32_ENTRY:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def boot_image(kernel: Kernel) -> Path:
    """What qemu's ``-kernel`` gets: the vmlinux inside the bzImage when it can be booted through PVH.

    A bzImage decompresses itself before the kernel runs; Debian's is
    XZ-compressed, which under TCG costs seconds per boot.  The ELF inside
    it (found at the XZ magic, decompressed once, cached beside the cache's
    kernels) is entered directly when the kernel has a PVH entry note;
    otherwise the bzImage is booted as it is.
    """
    target = cache_root() / "kernels" / f"vmlinux-{kernel.version}-{_file_key(kernel.image)}"
    if target.exists():
        return target if target.stat().st_size else kernel.image  # empty: known not to be PVH-bootable
    data = kernel.image.read_bytes()
    start = data.find(XZ_MAGIC)
    elf = b""
    if start >= 0:
        try:
            elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:])
        except lzma.LZMAError:
            elf = b""
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(target, elf if has_pvh_entry(elf) else b"")
    return target if target.stat().st_size else kernel.image


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def _write_atomically(target: Path, data: bytes) -> None:
    """Write via a temp file and a rename: a parallel worker sees no file or the whole one."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- the initramfs ---------------------------------------------------------------
def _cpio_entry(out: io.BytesIO, name: str, mode: int, data: bytes = b"", ino: int = 0) -> None:
    """One entry of a "newc" cpio archive (what the kernel unpacks into its rootfs)."""
    encoded = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
    out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
    out.write(b"\0" * (-(110 + len(encoded)) % 4))
    out.write(data)
    out.write(b"\0" * (-len(data) % 4))


INIT = r"""#!/bin/busybox sh
# Guest init: mount this machine's root read-only over 9p, make the writable
# and kernel filesystems, the chosen cgroup layout and the network, then hand
# over to the run's guest.sh (sshd). Every failure ends in a clear console line.
set -u
B=/bin/busybox
echo CONFORMANCE-GUEST-INIT
fail() { echo "CONFORMANCE-GUEST-FAILED: $*"; $B poweroff -f; }
$B mkdir -p /proc /sys /dev /newroot
$B mount -t proc proc /proc; $B mount -t sysfs sys /sys; $B mount -t devtmpfs dev /dev
for m in $(cat /modules.list); do $B insmod /modules/$m.ko 2>/dev/null || [ -d /sys/module/$m ] || fail "insmod $m"; done
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /newroot || fail "mount 9p root"
R=/newroot
echo CONFORMANCE-GUEST-ROOT
# The kernel's modules live in this machine's cache (under /root, which becomes a
# tmpfs): bind them to /run/kernel first, and point the kernel's module loader there.
$B mount -t tmpfs -o mode=755 tmpfs $R/run || fail "tmpfs run"
$B mkdir -p $R/run/kernel $R/run/conformance $R/run/sshd
$B mount --bind $R@KERNELROOT@ $R/run/kernel || fail "bind kernel modules"
for d in tmp root var/tmp; do $B mount -t tmpfs -o mode=1777 tmpfs $R/$d || fail "tmpfs $d"; done
$B chmod 700 $R/root
# /etc writable in memory over the shared one: the rootless lane adds users and subordinate ranges here
$B mkdir -p $R/run/etc-upper $R/run/etc-work
$B mount -t overlay -o lowerdir=$R/etc,upperdir=$R/run/etc-upper,workdir=$R/run/etc-work overlay $R/etc || fail "overlay etc"
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro share $R/run/conformance || fail "mount 9p share"
$B mount -t devtmpfs dev $R/dev; $B mkdir -p $R/dev/pts $R/dev/shm $R/dev/mqueue
$B mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts; $B mount -t tmpfs tmpfs $R/dev/shm
$B mount -t mqueue mqueue $R/dev/mqueue
$B mount -t proc proc $R/proc; $B mount -t sysfs sys $R/sys
# securityfs: where AppArmor profiles are loaded (scenarios that need it skip, saying so, without it)
$B mount -t securityfs securityfs $R/sys/kernel/security 2>/dev/null
echo /run/conformance/modprobe > /proc/sys/kernel/modprobe
if [ "@LAYOUT@" = cgroup-v2 ]; then
  $B mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || fail "cgroup2"
  for c in $(cat $R/sys/fs/cgroup/cgroup.controllers); do echo "+$c" > $R/sys/fs/cgroup/cgroup.subtree_control; done
else
  $B mount -t tmpfs -o mode=755 cgroup $R/sys/fs/cgroup
  for c in @V1@; do
    $B mkdir -p $R/sys/fs/cgroup/$c
    $B mount -t cgroup -o $c cgroup $R/sys/fs/cgroup/$c 2>/dev/null || $B rmdir $R/sys/fs/cgroup/$c
    case $c in *,*) for part in $(echo $c | $B tr , ' '); do $B ln -s $c $R/sys/fs/cgroup/$part; done;; esac
  done
fi
$B ip link set lo up; $B ip link set eth0 up; $B ip addr add 10.0.2.15/24 dev eth0
$B hostname conformance-guest
exec $B switch_root /newroot /bin/busybox sh /run/conformance/guest.sh
"""

#: AppArmor on, as Debian boots: the AppArmor scenarios run in the guests (this machine's kernel has no LSM)
LSM_CMDLINE = "apparmor=1 security=apparmor"

MODPROBE = """#!/bin/sh
# the guest kernel's module loader: modules come from the unpacked kernel package
exec /sbin/modprobe -d /run/kernel "$@"
"""

GUEST_SH = """# pid 1 of the guest, from this machine's busybox: start sshd, then reap orphans forever.
# -r: no re-exec of sshd (from 9p, under emulation) for every connection; an sshd without -r runs as it is
/usr/sbin/sshd -r -f /run/conformance/sshd_config -E /run/sshd.log 2>/dev/null ||
  /usr/sbin/sshd -f /run/conformance/sshd_config -E /run/sshd.log || echo "CONFORMANCE-GUEST-FAILED: sshd" > /dev/console
echo CONFORMANCE-GUEST-READY > /dev/console
while :; do wait; sleep 1; done
"""

SSHD_CONFIG = """ListenAddress 0.0.0.0
Port 22
HostKey /run/conformance/ssh_host_ed25519_key
AuthorizedKeysFile /run/conformance/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
UseDNS no
PidFile /run/sshd.pid
SetEnv PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
"""


def _module_files(kernel: Kernel) -> dict[str, Path]:
    """The modules to load, dependencies first (from modules.dep); built-in ones are skipped."""
    deps: dict[str, list[str]] = {}
    for line in (kernel.modules / "modules.dep").read_text().splitlines():
        mod, _, needs = line.partition(":")
        deps[Path(mod).name.split(".ko")[0]] = [n for n in needs.split()]
    paths = {Path(m).name.split(".ko")[0]: kernel.modules / m
             for m in (line.partition(":")[0] for line in (kernel.modules / "modules.dep").read_text().splitlines())}
    builtin = (kernel.modules / "modules.builtin").read_text()
    ordered: dict[str, Path] = {}

    def add(name: str) -> None:
        if name in ordered:
            return
        if name not in paths:
            if f"/{name}.ko" in builtin:
                return
            raise GuestError(f"kernel {kernel.version}: module {name} is neither built in nor in {kernel.modules}")
        for dep in reversed(deps[name]):
            add(Path(dep).name.split(".ko")[0])
        ordered[name] = paths[name]

    for wanted in INITRAMFS_MODULES:
        add(wanted)
    return ordered


def _init_script(kernel: Kernel, layout: str) -> str:
    return (INIT.replace("@LAYOUT@", layout).replace("@VERSION@", kernel.version)
            .replace("@KERNELROOT@", str(kernel.modules.parent.parent.parent)).replace("@V1@", " ".join(V1_CONTROLLERS)))


def cached_initramfs(kernel: Kernel, layout: str) -> Path:
    """The initramfs for a kernel and layout, built once and kept in the cache.

    Its name hashes everything it is made of (the init script, the module
    files, the busybox binary), so a change to any of them builds a new one.
    Nothing in it is per guest: keys and sshd's configuration come through
    the guest's own 9p share.
    """
    parts = [_init_script(kernel, layout), *(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                                              for p in [*_module_files(kernel).values(), find_static_busybox()])]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    target = cache_root() / "initramfs" / f"{kernel.version}-{layout}-{digest}.cpio"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        build_initramfs(kernel, layout, target)
    return target


def build_initramfs(kernel: Kernel, layout: str, dest: Path) -> None:
    modules = _module_files(kernel)
    init = _init_script(kernel, layout)
    out = io.BytesIO()
    entries = [("bin", stat.S_IFDIR | 0o755, b""), ("modules", stat.S_IFDIR | 0o755, b""),
               ("bin/busybox", stat.S_IFREG | 0o755, find_static_busybox().read_bytes()),
               ("init", stat.S_IFREG | 0o755, init.encode()),
               ("modules.list", stat.S_IFREG | 0o644, "\n".join(modules).encode() + b"\n")]
    entries += [(f"modules/{n}.ko", stat.S_IFREG | 0o644, p.read_bytes()) for n, p in modules.items()]
    for ino, (name, mode, data) in enumerate(entries, start=1):
        _cpio_entry(out, name, mode, data, ino)
    _cpio_entry(out, "TRAILER!!!", 0)
    _write_atomically(dest, out.getvalue())


# -- the guest --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _kvm_usable() -> bool:
    """KVM when /dev/kvm opens (``OCI_CONFORMANCE_QEMU_ACCEL=tcg`` forces emulation)."""
    if os.environ.get("OCI_CONFORMANCE_QEMU_ACCEL") == "tcg":
        return False
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


def _loops_per_jiffy(kernel: Kernel) -> list[str]:
    """``lpj=`` from this machine's clock and the kernel's HZ, so no CPU calibrates its delay loop.

    The boot CPU already takes it from the timer's frequency; each other CPU
    measures for about a second under emulation.  The value is what the boot
    CPU computes (TSC kHz × 1000 / HZ); nothing is given when either is unknown.
    """
    config = kernel.image.parent / f"config-{kernel.version}"
    try:
        hz = int(re.search(r"^CONFIG_HZ=(\d+)$", config.read_text(), re.M).group(1))  # type: ignore[union-attr]
        mhz = float(re.search(r"^cpu MHz\s*:\s*([\d.]+)", Path("/proc/cpuinfo").read_text(), re.M).group(1))  # type: ignore[union-attr]
    except (OSError, AttributeError, ValueError):
        return []
    return [f"lpj={int(mhz * 1_000_000 / hz)}"]


def guest_cpus(accel: str) -> int:
    """vCPUs for a guest: two under KVM; one under TCG (``OCI_CONFORMANCE_QEMU_SMP`` overrides).

    Under TCG a second vCPU is a second host thread emulating the same
    kernel: when the host deschedules the thread holding a kernel spinlock
    (other work on the machine), the other vCPU spins on it in emulation —
    soft lockups and RCU stalls that wedged guests here.  One vCPU per guest
    also lets two pytest-xdist workers each boot their own guest on a
    two-core machine (the faster way through a catalog; README "Speed").
    Scenarios that need two CPUs skip there with the reason (``multi-cpu``).
    """
    if os.environ.get("OCI_CONFORMANCE_QEMU_SMP"):
        return max(1, int(os.environ["OCI_CONFORMANCE_QEMU_SMP"]))
    return min(2, os.cpu_count() or 1) if accel == "kvm" else 1


def _die_with_parent() -> None:
    """In the qemu child: get SIGKILL if the harness dies, so no guest outlives it."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Guest:
    """One booted guest; ``stop()`` (also on any failure) leaves no process or file behind."""

    def __init__(self, layout: str, kernel_choice: str | None = None, memory_mb: int = 2048) -> None:
        if layout not in LAYOUTS:
            raise GuestError(f"qemu://{layout}: unknown layout (known: {', '.join(LAYOUTS)})")
        self.layout, self.kernel_choice, self.memory_mb = layout, kernel_choice, memory_mb
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.boot_s = 0.0
        #: seconds from qemu's start to each boot milestone seen (console lines, sshd's banner)
        self.timeline: dict[str, float] = {}
        self.image_note = ""
        self.cpus = 0
        self.accel = "kvm" if _kvm_usable() and not _KVM_BROKEN.exists() else "tcg"
        self.accel_note = "" if self.accel == "kvm" else (
            f"tcg: KVM failed here before ({_KVM_BROKEN.read_text().strip()})" if _KVM_BROKEN.exists() else "tcg: no usable /dev/kvm")

    @property
    def key(self) -> Path:
        return self._files() / "id_ed25519"

    @property
    def share(self) -> Path:
        """What the guest sees read-only at GUEST_SHARE (keys, sshd's configuration, the agent zip)."""
        return self._files() / "share"

    def _prepare(self) -> list[str]:
        if not shutil.which("qemu-system-x86_64"):
            raise GuestError("qemu-system-x86_64 is not installed (ci/setup.sh installs qemu-system-x86)")
        if not Path("/usr/sbin/sshd").exists():
            raise GuestError("/usr/sbin/sshd is missing (ci/setup.sh installs openssh-server)")
        kernel = resolve_kernel(self.kernel_choice)
        tag = os.environ.get("OCI_CONFORMANCE_TAG", "")
        # the harness's pid in the name lets a later run sweep it after a SIGKILL (host/session.py)
        self.dir = Path(tempfile.mkdtemp(prefix=f"oci-conformance-guest-{tag or 'untagged'}-{os.getpid()}-"))
        share = self.dir / "share"
        share.mkdir()
        initramfs = cached_initramfs(kernel, self.layout)
        image = kernel.image if os.environ.get("OCI_CONFORMANCE_QEMU_BZIMAGE") else boot_image(kernel)
        self.image_note = "vmlinux through PVH" if image != kernel.image else "bzImage"
        for name, kind in (("id_ed25519", "user"), ("share/ssh_host_ed25519_key", "host")):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"conformance-{kind}",
                            "-f", str(self.dir / name)], check=True)
        shutil.copy(self.dir / "id_ed25519.pub", share / "authorized_keys")
        (share / "sshd_config").write_text(SSHD_CONFIG)
        (share / "guest.sh").write_text(GUEST_SH)
        (share / "modprobe").write_text(MODPROBE)
        (share / "modprobe").chmod(0o755)
        self.port = _free_port()
        self.cpus = guest_cpus(self.accel)
        accel = (["-accel", "kvm", "-cpu", os.environ.get("OCI_CONFORMANCE_QEMU_CPU", "host")] if self.accel == "kvm"
                 else ["-accel", "tcg", "-cpu", TCG_CPU])
        cmdline = " ".join(["console=ttyS0 panic=-1", *([] if os.environ.get("OCI_CONFORMANCE_QEMU_VERBOSE") else ["quiet"]),
                            *(["cgroup_no_v1=all"] if self.layout == "cgroup-v2" else []), *FAST_BOOT_CMDLINE,
                            *_loops_per_jiffy(kernel), LSM_CMDLINE,
                            os.environ.get("OCI_CONFORMANCE_QEMU_APPEND", "")])
        firmware = ["-bios", str(QBOOT)] if QBOOT.exists() and not os.environ.get("OCI_CONFORMANCE_QEMU_SEABIOS") else []
        # -nodefaults: no VGA, floppy, CD-ROM or parallel port for the firmware and the kernel to probe
        return ["qemu-system-x86_64", *accel, "-nodefaults", *firmware, "-m", str(self.memory_mb), "-smp", str(self.cpus),
                "-kernel", str(image), "-initrd", str(initramfs), "-append", cmdline,
                "-display", "none", "-monitor", "none", "-serial", f"file:{self.dir / 'console.log'}", "-no-reboot",
                "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
                "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
                "-fsdev", f"local,id=share,path={share},security_model=none,readonly=on",
                "-device", "virtio-9p-pci,fsdev=share,mount_tag=share",
                "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{self.port}-:22",
                "-device", "virtio-net-pci,netdev=n0,romfile="]  # no option ROM: nothing boots from the net

    def _files(self) -> Path:
        """The guest's own temp dir (made by _prepare, removed by stop)."""
        if self.dir is None:
            raise GuestError(f"qemu://{self.layout}: the guest has no files yet (not prepared, or stopped)")
        return self.dir

    def console_tail(self, lines: int = 15) -> str:
        try:
            text = (self.dir / "console.log").read_text(errors="replace") if self.dir else ""
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def _check_kvm(self, started: float) -> None:
        """Raise _KvmFailed when qemu died at once or the KVM guest stayed silent."""
        if self.proc is not None and self.proc.poll() is not None:
            err = (self._files() / "qemu.err").read_text(errors="replace").strip().splitlines()
            raise _KvmFailed(f"qemu exit {self.proc.returncode}: {err[-1] if err else ''}"[:200])
        if time.monotonic() - started > KVM_SILENCE_S and not self.console_tail(1):
            raise _KvmFailed(f"no console output in {KVM_SILENCE_S:.0f}s")

    def _failure_line(self) -> str | None:
        """The guest init's own report of what failed, if it printed one."""
        try:
            text = (self.dir / "console.log").read_text(errors="replace") if self.dir else ""
        except OSError:
            return None
        return next((line.split("CONFORMANCE-GUEST-FAILED:", 1)[1].strip()
                     for line in text.splitlines() if "CONFORMANCE-GUEST-FAILED:" in line), None)

    def _ssh_banner(self) -> bool:
        """sshd answers, once the guest said it started it (CONFORMANCE-GUEST-READY).

        Not polled before: qemu's user network accepts on the host side at
        once and holds the connection while the guest has no network yet,
        and each probe costs the guest's sshd a fork under emulation.
        """
        if "ready" not in self.timeline:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                s.settimeout(10)
                return s.recv(8).startswith(b"SSH-")
        except OSError:
            return False

    def boot(self) -> "Guest":
        """Start qemu and wait for sshd; on any failure stop everything and raise GuestError.

        KVM is tried first where /dev/kvm opens; when it cannot run this guest
        (nested KVM often cannot: qemu aborts on an MSR, or the guest never
        prints a line) the boot is retried under TCG, and that is remembered
        in the cache so the next boot does not pay for the attempt again.
        """
        try:
            return self._boot_once()
        except _KvmFailed as exc:
            _KVM_BROKEN.parent.mkdir(parents=True, exist_ok=True)
            _KVM_BROKEN.write_text(str(exc) + "\n")
            self.accel, self.accel_note = "tcg", f"tcg: KVM failed here ({exc})"
            return self._boot_once()

    def _boot_once(self) -> "Guest":
        started = time.monotonic()
        try:
            argv = self._prepare()
            with open(self._files() / "qemu.err", "wb") as errors:  # the child keeps its own copy
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=errors, preexec_fn=_die_with_parent)
            deadline = started + (BOOT_TIMEOUT_KVM_S if self.accel == "kvm" else BOOT_TIMEOUT_TCG_S)
            while True:
                self._note_milestones(started)
                if self._ssh_banner():
                    break
                if self.accel == "kvm":
                    self._check_kvm(started)
                if self.proc.poll() is not None:
                    err = (self._files() / "qemu.err").read_text(errors="replace").strip()[-300:]
                    raise GuestError(f"qemu://{self.layout}: the guest stopped during boot (qemu exit "
                                     f"{self.proc.returncode}{': ' + err if err else ''}); console: {self.console_tail()}")
                failed = self._failure_line()
                if failed:
                    raise GuestError(f"qemu://{self.layout}: the guest failed to boot: {failed}; "
                                     f"console: {self.console_tail(6)}")
                if time.monotonic() > deadline:
                    raise GuestError(f"qemu://{self.layout}: no sshd after {deadline - started:.0f}s; "
                                     f"console: {self.console_tail()}")
                time.sleep(BOOT_POLL_S)
        except BaseException:
            self.stop()
            raise
        self.boot_s = time.monotonic() - started
        self._note_milestones(started)
        self.timeline["sshd"] = round(self.boot_s, 2)
        return self

    def _note_milestones(self, started: float) -> None:
        """When each milestone first showed on the console (polled with the banner, every BOOT_POLL_S)."""
        try:
            text = (self._files() / "console.log").read_text(errors="replace")
        except OSError:
            return
        now = round(time.monotonic() - started, 2)
        for name, mark in BOOT_MILESTONES:
            if name not in self.timeline and mark in text:
                self.timeline[name] = now

    def stop(self) -> None:
        """Power off (kill qemu: nothing in the guest is persistent) and remove the guest's files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


# -- the target the harness uses ------------------------------------------------------
def QemuTarget(spec: str, runtime_flags: dict[str, list[str]], tag: str,
               kernel_choice: str | None = None) -> RemoteTarget:
    """A RemoteTarget whose host is a guest booted here, stopped when the target closes.

    Its agent is started at once, so the host profile can say how long the
    guest took to be usable: ``guest_boot_s`` (qemu's start to sshd),
    ``guest_usable_s`` (to the agent's hello) and the boot's milestones.
    """
    builder = threading.Thread(target=agent_zip, daemon=True)  # built while the guest boots, not after
    builder.start()
    guest = Guest(spec[len("qemu://"):], kernel_choice or os.environ.get("OCI_CONFORMANCE_QEMU_KERNEL")).boot()
    builder.join()
    try:
        (guest.share / GUEST_AGENT_ZIP).write_bytes(agent_zip())
        host = testinfra.get_host(f"paramiko://root@127.0.0.1:{guest.port}", ssh_identity_file=str(guest.key))
        target = _GuestTarget(spec, host.backend, runtime_flags, tag, python="/usr/bin/python3")
        target.guest = guest
        if isinstance(target.agent, AgentLink):  # read from the guest's share, not sent through ssh
            target.agent.zip_on_host = f"{GUEST_SHARE}/{GUEST_AGENT_ZIP}"
        started = time.monotonic()
        if isinstance(target.agent, AgentLink):
            target.agent.start()
        guest.timeline["agent"] = round(guest.boot_s + time.monotonic() - started, 2)
    except BaseException:
        guest.stop()
        raise
    return target


class _GuestTarget(RemoteTarget):
    guest: Guest

    def execute(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...],
                upcoming: Next | None = None) -> Execution:  # the guest's agent writes no bundle ahead
        """As any remote host; a guest whose qemu ended is broken at once (nothing there can answer)."""
        if self.broken is None and (self.guest.proc is None or self.guest.proc.poll() is not None):
            status = "stopped" if self.guest.proc is None else f"exit {self.guest.proc.returncode}"
            self.broken = (f"host {self.spec}: the guest's qemu ended ({status}); console: {self.guest.console_tail(4)}"
                           "; the host is marked broken: its remaining cells were not run")
        return super().execute(scenario, runtime, disabled)

    def close(self) -> None:
        """Power the guest off without asking its agent to clean up first.

        Everything the agent made lives in the guest's memory (tmpfs, its own
        cgroups; this machine's root is shared read-only), so stopping qemu
        removes it all; waiting for the agent would cost seconds under
        emulation, and a wedged guest would never answer.
        """
        try:
            if isinstance(self.agent, AgentLink) and self.agent.channel is not None:
                with contextlib.suppress(Exception):
                    self.agent.channel.drop()
                self.agent.channel = None
        finally:
            try:
                with contextlib.suppress(Exception):
                    self.backend.client.close()
            finally:
                self.guest.stop()

    def describe(self, runtimes: list[str]) -> HostDescription:
        try:
            out = super().describe(runtimes)
        except HostError as exc:  # a broken guest: its error, and how its boot went all the same
            out = {"profile": {"error": str(exc)}, "runtimes": {}}
        out["profile"]["guest_boot_s"] = round(self.guest.boot_s, 2)
        out["profile"]["guest_usable_s"] = self.guest.timeline.get("agent")
        out["profile"]["guest_boot_timeline"] = dict(self.guest.timeline)
        out["profile"]["guest_kernel_image"] = self.guest.image_note
        out["profile"]["guest_accel"] = self.guest.accel_note or self.guest.accel
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance.hosts.qemu", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    fetch = sub.add_parser("fetch-kernel", help="unpack the Debian kernel package into the cache")
    fetch.add_argument("package", nargs="?")
    boot = sub.add_parser("boot", help="boot a guest, print how to reach it, stop on Ctrl-C")
    boot.add_argument("layout", choices=LAYOUTS)
    boot.add_argument("--kernel")
    args = parser.parse_args(argv)
    if args.cmd == "fetch-kernel":
        print(kernel_from_package(args.package).image)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    guest = Guest(args.layout, args.kernel).boot()
    try:
        print(f"booted in {guest.boot_s:.1f}s: ssh -i {guest.key} -p {guest.port} -o StrictHostKeyChecking=no "
              "-o UserKnownHostsFile=/dev/null root@127.0.0.1   (Ctrl-C stops it)")
        while guest.proc and guest.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        guest.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
