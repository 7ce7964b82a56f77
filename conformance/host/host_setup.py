"""Things a scenario needs made on the host first, and removed after.

``marker``: a file with a random token in the session's work dir, which the
container must not be able to reach.  ``sysv_shm``: a System V shared-memory
segment with a random key, which the container's IPC namespace must not show.
``posix_mqueue``: a POSIX message queue with a random name, likewise.
``shared_mount``: a small tmpfs with *shared* propagation, for a scenario to
bind into the container: a mount made under it inside must not appear here.
``syscall_probe``: a 600-byte static program (source below) that makes one
system call with integer arguments and exits with its errno, so a scenario
can try a call busybox has no applet for.  ``bridge_net``: network
namespaces of the suite's own holding a bridge, a veth pair into the
namespace the container joins by path, and a peer (``conformance/host/bridge_net.py``).
``ns_holder``: a process holding PID, IPC, UTS, network and mount namespaces, each
with something of its own to see, for a container to join by path
(``conformance/host/ns_holder.py``).  ``host_dir``: a directory to bind, with a
file, an executable script and a submount (``{{host_dir}}/sub``).
``special_files``: a file, a fifo, a unix socket and a symlink to bind.  ``host_sysctls``: the host's values of a
few sysctls (``{{host_kernel_printk_ratelimit}}`` …, SYSCTL_CANARIES) for a
config to name unchanged: a runtime that wrongly writes one changes nothing,
and one that changed anyway is put back.  ``host_mount`` (a step, not a
setup): a tmpfs mounted under the ``shared_mount`` canary while the container
runs, which propagation must or must not carry into it.
``net_canary``: a name for a link (``{{net_canary_link}}``) and a metric for a route
over loopback to TEST-NET-2 (``{{net_canary_metric}}``) that a scenario's
container may add in its own network namespace; if a broken runtime (or a
negative control) let them reach the host's, they are deleted from there
afterwards (``host_unchanged`` leaves other runs' canaries out of its view).
``foreign_cgroup``: a cgroup of the harness's own (``{{foreign_cgroup}}``, its
directory: in the v1 pids hierarchy, or cgroup2's on a v2 host) that a
scenario may move the container's init into: a runtime's delete must remove
what its create made, not a cgroup someone else made.
``oom_sibling``: a ``sleep`` of the harness's own with oom_score_adj 1000
(``{{oom_sibling_pid}}``), beside a container the OOM killer is about to act
in: it must survive.  ``apparmor_profile``: an AppArmor profile loaded for one
scenario (``{{apparmor_profile}}``), which denies reading ``{{apparmor_denied}}``.
All are the harness's own canaries: nothing else on the host is touched.
"""
from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import platform
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

from . import cgroupfs
from .bridge_net import bridge_net
from .hoststate import CANARY_METRIC_PER_PID, CANARY_ROUTE_DEST, CANARY_ROUTE_HEX, canary_link_maker, canary_route_maker
from .ns_holder import ns_holder

IPC_CREAT, IPC_RMID = 0o1000, 0


@contextlib.contextmanager
def marker(workdir: Path) -> Iterator[dict[str, str]]:
    token = "host-marker-" + secrets.token_hex(8)
    path = workdir / token
    path.write_text(token + "\n")
    try:
        yield {"host_marker": str(path), "host_marker_token": token}
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def sysv_shm(workdir: Path) -> Iterator[dict[str, str]]:
    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x5C000000 | secrets.randbits(24)
    shmid = libc.shmget(ctypes.c_int(key), ctypes.c_size_t(4096), IPC_CREAT | 0o600)
    if shmid < 0:
        raise OSError(ctypes.get_errno(), "shmget failed on the host")
    try:
        # /proc/sysvipc/shm (what a container can read) prints keys in decimal
        yield {"host_shm_key": str(key), "host_shm_id": str(shmid)}
    finally:
        libc.shmctl(shmid, IPC_RMID, None)


@contextlib.contextmanager
def posix_mqueue(workdir: Path) -> Iterator[dict[str, str]]:
    libc = ctypes.CDLL(None, use_errno=True)
    name = "conformance-" + secrets.token_hex(8)
    path = ("/" + name).encode()
    mqd = libc.mq_open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, ctypes.c_uint(0o600), None)
    if mqd < 0:
        raise OSError(ctypes.get_errno(), "mq_open failed on the host")
    try:
        # an mqueue filesystem lists a namespace's queues by name, without the slash
        yield {"host_mqueue": name}
    finally:
        libc.mq_close(mqd)
        libc.mq_unlink(path)


MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_SHARED, MNT_DETACH = 0x2, 0x4, 0x8, 1 << 20, 0x2


@contextlib.contextmanager
def shared_mount(workdir: Path, owner: tuple[int, int] | None = None) -> Iterator[dict[str, str]]:
    """``owner``: the tmpfs's root belongs to that uid and gid (the container's root in a rootless lane,
    which must be able to make its mount point in it as a rootful container's root can)."""
    libc = ctypes.CDLL(None, use_errno=True)
    path = workdir / ("shared-" + secrets.token_hex(8))
    path.mkdir()
    target = str(path).encode()
    data = "size=64k,mode=755" + (f",uid={owner[0]},gid={owner[1]}" if owner else "")
    try:
        if libc.mount(b"conformance", target, b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, data.encode()) != 0:
            raise OSError(ctypes.get_errno(), f"cannot mount the shared canary tmpfs on {path}")
        try:
            if libc.mount(None, target, None, MS_SHARED, None) != 0:
                raise OSError(ctypes.get_errno(), f"cannot make {path} a shared mount")
            yield {"host_shared_mount": str(path)}
        finally:
            # detaching takes along whatever a broken runtime let propagate under it
            libc.umount2(target, MNT_DETACH)
    finally:
        path.rmdir()


@contextlib.contextmanager
def host_dir(workdir: Path, owner: tuple[int, int] | None = None) -> Iterator[dict[str, str]]:
    """A host directory to bind into a container: ``file`` (``{{host_dir_token}}``), ``run.sh`` (an
    executable script printing it), and ``sub``, a tmpfs mounted there holding ``marker`` (rbind carries
    it, bind does not).  Detached and removed afterwards, whatever a container did to it.  ``owner``:
    the directory, file and script are the container root's, so only a mount flag can refuse it a write."""
    libc = ctypes.CDLL(None, use_errno=True)
    token = "host-dir-" + secrets.token_hex(8)
    path = workdir / ("hostdir-" + secrets.token_hex(6))
    sub = path / "sub"
    sub.mkdir(parents=True)
    try:
        (path / "file").write_text(token + "\n")
        script = path / "run.sh"
        script.write_text(f"#!/bin/sh\necho ran {token}\n")
        script.chmod(0o755)
        if owner is not None:
            for owned in (path, path / "file", script):
                os.chown(owned, *owner)
        if libc.mount(b"conformance-sub", str(sub).encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      b"size=16k,mode=755") != 0:
            raise OSError(ctypes.get_errno(), f"cannot mount the submount tmpfs on {sub}")
        try:
            (sub / "marker").write_text(token + "-sub\n")
            yield {"host_dir": str(path), "host_dir_token": token}
        finally:
            libc.umount2(str(sub).encode(), MNT_DETACH)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def special_files(workdir: Path) -> Iterator[dict[str, str]]:
    """A host file (holding ``{{special_token}}``), a fifo, a bound unix socket and a symlink to the file,
    for a container to bind: each must keep its kind inside (the symlink is resolved on the host)."""
    import socket
    token = "special-" + secrets.token_hex(8)
    path = workdir / ("special-" + secrets.token_hex(6))
    path.mkdir()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        (path / "file").write_text(token + "\n")
        os.mkfifo(path / "fifo", 0o600)
        sock.bind(str(path / "socket"))
        (path / "link").symlink_to(path / "file")
        yield {"special_file": str(path / "file"), "special_fifo": str(path / "fifo"),
               "special_socket": str(path / "socket"), "special_symlink": str(path / "link"),
               "special_token": token}
    finally:
        sock.close()
        shutil.rmtree(path, ignore_errors=True)


def mount_under_shared(variables: dict[str, str], name: str) -> str:
    """Mount a small tmpfs at ``{{host_shared_mount}}/NAME`` (step ``host_mount``); returns its path.

    Only under the suite's own shared canary, whose teardown detaches it with
    whatever propagated under it; ``name`` is one path component.
    """
    base = variables.get("host_shared_mount")
    if base is None:
        raise OSError("host_mount needs host_setup shared_mount (it mounts only under that canary)")
    if not name or "/" in name or name in (".", ".."):
        raise OSError(f"host_mount: {name!r} is not one path component")
    target = Path(base) / name
    target.mkdir(exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"conformance-late", str(target).encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  b"size=16k,mode=755") != 0:
        raise OSError(ctypes.get_errno(), f"cannot mount a tmpfs on {target}")
    return str(target)


#: sysctls whose host values ``host_sysctls`` names {{host_<key with _ for .>}}: one that no namespace holds,
#: and one of the network namespace (a config naming it without one would write the host's)
SYSCTL_CANARIES = ("kernel.msgmax", "kernel.printk_ratelimit", "net.ipv4.ip_unprivileged_port_start")


def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


@contextlib.contextmanager
def host_sysctls(workdir: Path) -> Iterator[dict[str, str]]:
    before = {key: _sysctl_path(key).read_text().strip() for key in SYSCTL_CANARIES}
    try:
        yield {"host_" + key.replace(".", "_"): value for key, value in before.items()}
    finally:
        for key, value in before.items():  # the values were the host's own: only a runtime gone astray
            if _sysctl_path(key).read_text().strip() != value:  # could have changed them
                _sysctl_path(key).write_text(value)


#: syscall-probe NR [ARG...] (x86-64), built from this source with
#: gcc -static -nostdlib -nostartfiles -Os -fno-asynchronous-unwind-tables
#: -fno-stack-protector -no-pie -Wl,--build-id=none,-n,-z,norelro -s;
#: objcopy --remove-section .comment  (sha256 efc58978…d628291a):
#:
#:   static long num(const char *s) {
#:       long v = 0, base = 10, neg = *s == '-';
#:       if (neg) s++;
#:       if (s[0] == '0' && s[1] == 'x') { base = 16; s += 2; }
#:       for (; *s; s++) v = v * base + (*s <= '9' ? *s - '0' : (*s | 32) - 'a' + 10);
#:       return neg ? -v : v;
#:   }
#:   __attribute__((used)) static void run(long *sp) {
#:       long a[7] = {0}, r;
#:       for (long i = 1; i < sp[0] && i <= 7; i++) a[i - 1] = num((char *)sp[i + 1]);
#:       register long r10 __asm__("r10") = a[4], r8 __asm__("r8") = a[5], r9 __asm__("r9") = a[6];
#:       __asm__ volatile("syscall" : "=a"(r) : "a"(a[0]), "D"(a[1]), "S"(a[2]), "d"(a[3]),
#:                        "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
#:       r = r < 0 && r > -4096 ? -r : 0;
#:       __asm__ volatile("syscall" :: "a"(60L), "D"(r));
#:       for (;;) ;
#:   }
#:   __asm__(".globl _start\n_start: mov %rsp, %rdi\n and $-16, %rsp\n call run\n");
SYSCALL_PROBE_X86_64 = base64.b64decode("""
f0VMRgIBAQAAAAAAAAAAAAIAPgABAAAAsABAAAAAAABAAAAAAAAAAJgBAAAAAAAAAAAAAEAAOAAC
AEAAAwACAAEAAAAFAAAAsAAAAAAAAACwAEAAAAAAALAAQAAAAAAA1wAAAAAAAADXAAAAAAAAAAEA
AAAAAAAAUeV0ZAYAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAAA
AAAAAABIiedIg+Tw6AAAAABJifi5DgAAAEiNfCTIMcDzq02LEL4BAAAASTnyfm9Ig/4IdGlJi1Tw
CECKOkCA/y11A0j/woA6MEG5CgAAAHUQgHoBeHUKSIPCAkG5EAAAADHJD74ChMB0IUkPr8k8OX8H
g+gwSJjrCoPIIIPoV0gPvsBIAcFI/8Lr2ECA/y11A0j32UiJTPTASP/G64xMi1Qk6EyLRCTwTItM
JPhIi0QkyEiLfCTQSIt0JNhIi1Qk4A8FMf9IPQHw//9yBkj32EiJx7g8AAAADwXr/gAuc2hzdHJ0
YWIALnRleHQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
AAAAAAAAAAAAAAAAAAAAAAsAAAABAAAABgAAAAAAAACwAEAAAAAAALAAAAAAAAAA1wAAAAAAAAAA
AAAAAAAAAAEAAAAAAAAAAAAAAAAAAAABAAAAAwAAAAAAAAAAAAAAAAAAAAAAAACHAQAAAAAAABEA
AAAAAAAAAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAA""")


@contextlib.contextmanager
def syscall_probe(workdir: Path) -> Iterator[dict[str, str]]:
    if platform.machine() != "x86_64":
        raise OSError(f"the syscall probe is built for x86-64, not {platform.machine()}")
    path = workdir / ("syscall-probe-" + secrets.token_hex(4))
    path.write_bytes(SYSCALL_PROBE_X86_64)
    path.chmod(0o755)
    try:
        yield {"syscall_probe": str(path)}
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def net_canary(workdir: Path) -> Iterator[dict[str, str]]:
    if shutil.which("ip") is None:
        raise OSError("net_canary needs iproute2's `ip` on the runtime's host (to remove a canary that leaked)")
    link = f"cfk{os.getpid():06x}{secrets.token_hex(2)}"
    metric = str(os.getpid() * CANARY_METRIC_PER_PID + secrets.randbelow(CANARY_METRIC_PER_PID))
    try:
        yield {"net_canary_link": link, "net_canary_metric": metric,
               "net_canary_route": f"{CANARY_ROUTE_DEST}/24 dev lo metric {metric}"}
    finally:
        if Path(f"/sys/class/net/{link}").exists():
            _ip("link", "del", link)
        routes = Path("/proc/net/route").read_text().splitlines()[1:]
        if any(r.split()[1] == CANARY_ROUTE_HEX and r.split()[6] == metric for r in routes):
            _ip("route", "del", f"{CANARY_ROUTE_DEST}/24", "dev", "lo", "metric", metric)


def sweep_dead_canaries() -> list[str]:
    """Remove the canary links and routes (``net_canary``) that reached the host's network namespace
    and whose maker no longer runs (killed: its ``finally`` never ran); returns what it removed.
    A live maker's canary is its own, to remove when its scenario ends."""
    removed = []
    for name in os.listdir("/sys/class/net"):
        maker = canary_link_maker(name)
        if maker is not None and not os.path.exists(f"/proc/{maker}"):
            _ip("link", "del", name)
            removed.append(f"link {name}")
    try:
        routes = Path("/proc/net/route").read_text().splitlines()[1:]
    except FileNotFoundError:  # no IPv4
        routes = []
    for route in routes:
        fields = route.split()
        iface, dest, metric = fields[0], fields[1], fields[6]
        maker = canary_route_maker(metric)
        if iface == "lo" and dest == CANARY_ROUTE_HEX and maker is not None and not os.path.exists(f"/proc/{maker}"):
            _ip("route", "del", f"{CANARY_ROUTE_DEST}/24", "dev", "lo", "metric", metric)
            removed.append(f"route {CANARY_ROUTE_DEST}/24 dev lo metric {metric}")
    return removed


@contextlib.contextmanager
def oom_sibling(workdir: Path) -> Iterator[dict[str, str]]:
    """A host process beside the container, as attractive to the OOM killer as a process can be
    (oom_score_adj 1000): a container's memory cgroup OOM must choose inside the container, never it.
    It is the harness's own child, stopped and reaped afterwards, whatever happened to it."""
    sibling = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        Path(f"/proc/{sibling.pid}/oom_score_adj").write_text("1000")
        yield {"oom_sibling_pid": str(sibling.pid)}
    finally:
        sibling.kill()
        sibling.wait()


#: a profile that lets everything through but reading one path, so that being confined by it shows
APPARMOR_PROFILE = """profile {name} flags=(attach_disconnected,mediate_deleted) {{
  file,
  capability,
  network,
  signal,
  ptrace,
  unix,
  mount,
  umount,
  pivot_root,
  deny {denied} r,
}}
"""
APPARMOR_DENIED = "/tmp/apparmor-denied"


@contextlib.contextmanager
def apparmor_profile(workdir: Path) -> Iterator[dict[str, str]]:
    """An AppArmor profile of our own (``{{apparmor_profile}}``), loaded into the kernel with
    apparmor_parser for one scenario and removed after: it allows everything but reading
    ``{{apparmor_denied}}`` (a path in the container's view)."""
    name = "oci-conformance-" + secrets.token_hex(4)
    path = workdir / name
    path.write_text(APPARMOR_PROFILE.format(name=name, denied=APPARMOR_DENIED))
    _apparmor_parser("--replace", str(path))
    try:
        yield {"apparmor_profile": name, "apparmor_denied": APPARMOR_DENIED}
    finally:
        _apparmor_parser("--remove", str(path))
        path.unlink(missing_ok=True)


def _apparmor_parser(*args: str) -> None:
    done = subprocess.run(["apparmor_parser", "--skip-cache", "--quiet", *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise OSError(f"apparmor_parser {' '.join(args)} failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)


@contextlib.contextmanager
def foreign_cgroup(workdir: Path) -> Iterator[dict[str, str]]:
    m = cgroupfs.mounts()
    top = m.get("pids") or (m[""] if cgroupfs.layout(m) == "v2" else None)
    if top is None:
        raise OSError("foreign_cgroup needs a v1 pids hierarchy or a cgroup v2 host")
    name = "oci-conformance-foreign-" + secrets.token_hex(4)
    (top / name).mkdir()
    try:
        yield {"foreign_cgroup": str(top / name)}
    finally:
        cgroupfs.remove_leftovers("/" + name)  # tasks a broken run left in it are the container's


SETUPS = {"marker": marker, "sysv_shm": sysv_shm, "posix_mqueue": posix_mqueue,
          "shared_mount": shared_mount, "syscall_probe": syscall_probe, "bridge_net": bridge_net,
          "net_canary": net_canary, "foreign_cgroup": foreign_cgroup, "ns_holder": ns_holder,
          "host_sysctls": host_sysctls, "host_dir": host_dir, "special_files": special_files,
          "oom_sibling": oom_sibling, "apparmor_profile": apparmor_profile}


#: setups the container's root writes into: owned by it (``prepared``'s ``owner``) in a rootless lane
OWNED = {"shared_mount": shared_mount, "host_dir": host_dir}


@contextlib.contextmanager
def prepared(names: tuple[str, ...], workdir: Path, owner: tuple[int, int] | None = None
             ) -> Iterator[dict[str, str]]:
    """Enter every named setup; all are undone on exit, whatever happened.

    ``owner``: the uid and gid of the container's root on the host, when it is not root's
    (the rootless lane): what the container writes into is theirs.
    """
    with contextlib.ExitStack() as stack:
        variables: dict[str, str] = {}
        for name in names:
            setup = OWNED[name](workdir, owner) if name in OWNED else SETUPS[name](workdir)
            variables.update(stack.enter_context(setup))
        yield variables
