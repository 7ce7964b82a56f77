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
``net_canary``: a name for a link (``{{net_canary_link}}``) and a metric for a route
over loopback to TEST-NET-2 (``{{net_canary_metric}}``) that a scenario's
container may add in its own network namespace; if a broken runtime (or a
negative control) let them reach the host's, they are deleted from there
afterwards (``host_unchanged`` leaves other runs' canaries out of its view).
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

from .bridge_net import bridge_net
from .hoststate import CANARY_ROUTE_DEST, CANARY_ROUTE_HEX

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
    link = "cfk" + secrets.token_hex(4)
    metric = str(100000 + secrets.randbelow(1 << 30))
    try:
        yield {"net_canary_link": link, "net_canary_metric": metric,
               "net_canary_route": f"{CANARY_ROUTE_DEST}/24 dev lo metric {metric}"}
    finally:
        if Path(f"/sys/class/net/{link}").exists():
            _ip("link", "del", link)
        routes = Path("/proc/net/route").read_text().splitlines()[1:]
        if any(r.split()[1] == CANARY_ROUTE_HEX and r.split()[6] == metric for r in routes):
            _ip("route", "del", f"{CANARY_ROUTE_DEST}/24", "dev", "lo", "metric", metric)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)


SETUPS = {"marker": marker, "sysv_shm": sysv_shm, "posix_mqueue": posix_mqueue,
          "shared_mount": shared_mount, "syscall_probe": syscall_probe, "bridge_net": bridge_net,
          "net_canary": net_canary}


#: setups the container's root writes into: owned by it (``prepared``'s ``owner``) in a rootless lane
OWNED = {"shared_mount": shared_mount}


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
