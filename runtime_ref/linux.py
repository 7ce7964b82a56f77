"""Thin wrappers over the Linux system calls Python 3.11's ``os`` lacks.

Everything here is a direct call into libc (``mount``, ``umount2``,
``unshare``, ``setns``, ``prctl``, ``syscall``).  We load ``_ctypes`` (the C
half of ctypes) instead of ``ctypes`` itself: the Python half costs ~3 ms of
start-up and every container start pays it.
"""
from __future__ import annotations

import _ctypes
import os
from _ctypes import FUNCFLAG_CDECL, FUNCFLAG_PYTHONAPI, FUNCFLAG_USE_ERRNO, CFuncPtr, _SimpleCData

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _ctypes import Array
    from typing import Callable


# --- the three C types we need -------------------------------------------------
class c_long(_SimpleCData):  # type: ignore[type-arg]  # (typeshed's _SimpleCData is generic, the C class is not)
    _type_ = "l"


class c_int(_SimpleCData):  # type: ignore[type-arg]
    _type_ = "i"


class c_char(_SimpleCData):  # type: ignore[type-arg]
    _type_ = "c"


class _Func(CFuncPtr):
    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO
    _restype_ = c_long


class _FuncHoldingGIL(CFuncPtr):
    """Called without releasing the GIL (ctypes' PyDLL convention)."""
    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO | FUNCFLAG_PYTHONAPI
    _restype_ = c_long


class _Lib:
    """The process's own symbols (libc, and Python's C API): what ``ctypes.CDLL(None)`` holds."""
    _handle = _ctypes.dlopen(None, os.RTLD_NOW | os.RTLD_GLOBAL)  # type: ignore[arg-type]  # None: this process


def _fn(name: str, cls: type[CFuncPtr] = _Func) -> CFuncPtr:
    """The C function ``name``; typeshed wants a CDLL where _ctypes takes anything with a _handle."""
    return cls((name, _Lib))  # type: ignore[arg-type]


_syscall = _fn("syscall")
_syscall_gil = _fn("syscall", _FuncHoldingGIL)
# what os.fork does around fork(): the import lock, at-fork hooks, and in the
# child a fresh GIL and thread list (other threads do not exist there)
_before_fork = _fn("PyOS_BeforeFork", _FuncHoldingGIL)
_after_fork_parent = _fn("PyOS_AfterFork_Parent", _FuncHoldingGIL)
_after_fork_child = _fn("PyOS_AfterFork_Child", _FuncHoldingGIL)
_mount = _fn("mount")
_umount2 = _fn("umount2")
_unshare = _fn("unshare")
_setns = _fn("setns")
_prctl = _fn("prctl")
_sethostname = _fn("sethostname")
_socket = _fn("socket")
_setdomainname = _fn("setdomainname")
_ioctl = _fn("ioctl")


def _check(ret: int, what: str) -> int:
    """A libc return value, or OSError(errno) naming the call."""
    if ret == -1:
        err = _ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))
    return ret


def buffer(data: bytes) -> tuple[Array[c_char], int]:
    """A writable C buffer holding ``data``; returns (buf, address).  Keep ``buf``
    referenced while the kernel may read the address."""
    size = max(len(data), 1)
    buf = (c_char * size).from_buffer_copy(data.ljust(size, b"\0"))
    return buf, _ctypes.addressof(buf)


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


# --- namespaces ----------------------------------------------------------------
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

SYS_clone = 56
SYS_pivot_root = 155
SYS_capget = 125
SYS_capset = 126
SYS_seccomp = 317
SYS_setgroups = 116
SYS_setresuid = 117
SYS_setresgid = 119
SYS_prlimit64 = 302


def clone(flags: int) -> int:
    """fork(2) with namespace flags: the child returns 0, the parent the pid.

    Called with a NULL stack the raw clone syscall behaves like fork: the
    child continues on a copy-on-write copy of our stack.  Around it we do
    what os.fork does (PyOS_BeforeFork / AfterFork_*), so that the child has
    a consistent interpreter even though the runtime has another thread.
    """
    _before_fork()
    ret = _syscall_gil(c_long(SYS_clone), c_long(flags | 17),  # 17 = SIGCHLD
                       c_long(0), c_long(0), c_long(0), c_long(0))
    if ret == 0:
        _after_fork_child()
    else:
        _after_fork_parent()
    return _check(ret, "clone")


def unshare(flags: int) -> None:
    _check(_unshare(c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_setns(c_int(fd), c_int(nstype)), "setns")


# --- mounts --------------------------------------------------------------------
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0,
          data: str | None = None) -> None:
    _check(_mount(_b(source), _b(target), _b(fstype), c_long(flags), _b(data)),
           "mount %s on %s (%s)" % (source, target, fstype))


def umount2(target: str, flags: int = 0) -> None:
    _check(_umount2(_b(target), c_int(flags)), "umount %s" % target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(c_long(SYS_pivot_root), _b(new_root), _b(put_old)), "pivot_root")


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_sethostname(b, c_long(len(b))), "sethostname")


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_setdomainname(b, c_long(len(b))), "setdomainname")


# --- prctl, capabilities, seccomp ---------------------------------------------
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    return _check(_prctl(c_int(option), c_long(a2), c_long(a3), c_long(a4), c_long(a5)),
                  "prctl(%d)" % option)


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) with _LINUX_CAPABILITY_VERSION_3 (two 32-bit words per set)."""
    hdr = (0x20080522).to_bytes(4, "little") + (0).to_bytes(4, "little")
    data = b""
    for word in (0, 1):
        for bits in (effective, permitted, inheritable):
            data += ((bits >> (32 * word)) & 0xFFFFFFFF).to_bytes(4, "little")
    h, ha = buffer(hdr)
    d, da = buffer(data)
    _check(_syscall(c_long(SYS_capset), c_long(ha), c_long(da)), "capset")


def seccomp_load(filter_bytes: bytes, flags: int = 0) -> None:
    """Install a classic BPF program (``struct sock_filter[]`` bytes)."""
    prog, pa = buffer(filter_bytes)
    fprog = (len(filter_bytes) // 8).to_bytes(8, "little") + pa.to_bytes(8, "little")
    f, fa = buffer(fprog)
    # seccomp(SECCOMP_SET_MODE_FILTER=1, flags, &fprog)
    _check(_syscall(c_long(SYS_seccomp), c_long(1), c_long(flags), c_long(fa)), "seccomp")


def ioctl(fd: int, request: int, arg: bytes | int = 0) -> tuple[int, bytes]:
    """ioctl(2) (libc's: ``fcntl``, a module of its own, costs a library load per start):
    ``arg`` is an integer, or bytes passed by address; returns (the result, the bytes as the
    kernel left them)."""
    if isinstance(arg, bytes):
        buf, addr = buffer(arg)
        ret = _check(_ioctl(c_int(fd), c_long(request), c_long(addr)), "ioctl(0x%x)" % request)
        return ret, bytes(buf)[:len(arg)]
    return _check(_ioctl(c_int(fd), c_long(request), c_long(arg)), "ioctl(0x%x)" % request), b""


RLIM_INFINITY = (1 << 64) - 1


def setrlimit(resource: int, soft: int, hard: int) -> None:
    """prlimit64(2) on ourselves; -1 is RLIM_INFINITY, as in Python's ``resource``."""
    limits = (soft & RLIM_INFINITY).to_bytes(8, "little") + (hard & RLIM_INFINITY).to_bytes(8, "little")
    syscall(SYS_prlimit64, 0, resource, limits, 0, what="prlimit64(%d)" % resource)


def getrlimit(resource: int) -> tuple[int, int]:
    """prlimit64(2) reading our own (soft, hard) limits."""
    buf, addr = buffer(bytes(16))
    _check(_syscall(c_long(SYS_prlimit64), c_long(0), c_long(resource), c_long(0), c_long(addr)),
           "prlimit64(%d)" % resource)
    raw = bytes(buf)
    return int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")


def loopback_up() -> None:
    """ifconfig lo up: SIOCGIFFLAGS, set IFF_UP, SIOCSIFFLAGS on a throwaway socket."""
    fd = _check(_socket(c_int(2), c_int(2 | 0o2000000), c_int(0)), "socket")  # AF_INET, SOCK_DGRAM|CLOEXEC
    try:
        _, req = ioctl(fd, 0x8913, b"lo".ljust(16, b"\0") + bytes(24))  # SIOCGIFFLAGS
        flags = int.from_bytes(req[16:18], "little") | 1  # IFF_UP
        ioctl(fd, 0x8914, req[:16] + flags.to_bytes(2, "little") + req[18:])  # SIOCSIFFLAGS
    finally:
        os.close(fd)


# --- user and group ids ---------------------------------------------------------
# Raw system calls, not glibc's: glibc applies set*id to every thread it knows
# of and waits for each to acknowledge.  The init is a raw clone of a runtime
# that has a helper thread; glibc still lists that thread, which does not
# exist in the init, and would wait for it forever.

def setresuid(uid: int) -> None:
    _check(_syscall(c_long(SYS_setresuid), c_long(uid), c_long(uid), c_long(uid)), "setresuid(%d)" % uid)


def setresgid(gid: int) -> None:
    _check(_syscall(c_long(SYS_setresgid), c_long(gid), c_long(gid), c_long(gid)), "setresgid(%d)" % gid)


def setgroups(gids: list[int]) -> None:
    data = b"".join(g.to_bytes(4, "little") for g in gids)
    buf, addr = buffer(data)
    _check(_syscall(c_long(SYS_setgroups), c_long(len(gids)), c_long(addr)), "setgroups(%s)" % gids)


def bpf(cmd: int, attr_addr: int, size: int, log: Callable[[], str] | None = None) -> int:
    """bpf(2); on failure the verifier's log (if any) is part of the message."""
    ret: int = _syscall(c_long(321), c_long(cmd), c_long(attr_addr), c_long(size))
    if ret == -1:
        err = _ctypes.get_errno()
        detail = log() if log else ""
        raise OSError(err, "bpf(%d): %s%s" % (cmd, os.strerror(err), (": " + detail) if detail else ""))
    return ret


def syscall(nr: int, *args: int | bytes, what: str) -> int:
    """A raw system call; a ``bytes`` argument is passed as the address of a copy of it (kept
    alive for the call).  OSError(errno) names ``what``."""
    keep = []
    values = []
    for a in args:
        if isinstance(a, bytes):
            buf, addr = buffer(a)
            keep.append(buf)
            values.append(c_long(addr))
        else:
            values.append(c_long(a))
    ret: int = _syscall(c_long(nr), *values)
    del keep
    return _check(ret, what)
