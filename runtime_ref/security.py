"""Phase: what the process may do — rlimits, capabilities, ids, no_new_privs.

The pieces ``process.finish`` puts in order.  ``finalize`` keeps the order of
runc's ``finalizeNamespace``, for these reasons (rlimits come before it:
raising a hard limit needs CAP_SYS_RESOURCE, which it drops): the bounding
set is dropped while we still hold CAP_SETPCAP;
``PR_SET_KEEPCAPS`` around setuid, because changing from uid 0 to another
uid clears the permitted set; only then are effective/permitted/inheritable
set with capset, and ambient capabilities raised last (they must already be
permitted and inheritable).
"""
from __future__ import annotations

import os

from . import linux as L
from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable

    from .hints import Process, Switches

CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
        "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
        "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
        "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
        "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
        "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"]
CAP_NUMBER = {"CAP_" + n: i for i, n in enumerate(CAPS)}

#: process.rlimits types -> Linux's resource numbers (asm-generic/resource.h, x86): a table, not
#: ``import resource``, a library load per container start (RLIMIT_OFILE: BSD's name for NOFILE,
#: which that module took too)
RLIMITS = {"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
           "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_OFILE": 7, "RLIMIT_MEMLOCK": 8,
           "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12,
           "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15}


def last_cap() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPS) - 1


def cap_mask(names: Iterable[str] | None, where: str) -> int:
    """Capability names -> a bit mask; an unknown name is an error naming ``where``."""
    mask = 0
    for n in names or []:
        if n not in CAP_NUMBER:
            raise Error("%s: unknown capability %r" % (where, n))
        mask |= 1 << CAP_NUMBER[n]
    return mask


def check(proc: Process, warn_unknown_caps: bool = False, disabled: Switches = frozenset()) -> None:
    """Validate capability names and rlimit types at create time, not in the init.

    A capability name this runtime cannot map is an error for a config written
    at runtime-spec 1.0.x ("MUST cause an error"); from 1.1.0 on the spec asks
    for a warning instead, and that the runtime not fail (``warn_unknown_caps``):
    the name is then dropped from ``proc`` with one line on stderr.  Switch
    ``cap-names``: dropped without a word, whatever the version (crun 1.8).
    """
    caps = proc.get("capabilities") or {}
    for kind, names in caps.items():
        unknown = [n for n in names or [] if n not in CAP_NUMBER]
        if unknown and not (warn_unknown_caps or "cap-names" in disabled):
            cap_mask(names, "process.capabilities." + kind)  # raises, naming the first
        if unknown:
            if "cap-names" not in disabled:
                import sys
                sys.stderr.write("runtime-ref: warning: process.capabilities.%s: ignoring unknown capabilities %s\n"
                                 % (kind, ", ".join(unknown)))
            caps[kind] = [n for n in names if n in CAP_NUMBER]
    for r in proc.get("rlimits") or []:
        if r.get("type", "") not in RLIMITS:
            raise Error("process.rlimits: unknown type %r" % r.get("type"))
        for field in ("soft", "hard"):
            if not isinstance(r.get(field), int) or not -1 <= r[field] <= L.RLIM_INFINITY:
                raise Error("process.rlimits %s: %s %r is not a limit (0 to 2^64-1; -1 or 2^64-1: "
                            "unlimited)" % (r["type"], field, r.get(field)))


def set_rlimits(rlimits: list[dict[str, Any]] | None) -> None:
    """process.rlimits, each as (soft, hard)."""
    for r in rlimits or []:
        try:
            L.setrlimit(RLIMITS[r["type"]], r["soft"], r["hard"])
        except OSError as e:
            raise Error("process.rlimits %s (soft %d, hard %d): %s" % (
                r["type"], r["soft"], r["hard"], os.strerror(e.errno or 0))) from None


def drop_bounding(caps: dict[str, list[str]]) -> None:
    """Drop every capability the bounding set does not list (needs CAP_SETPCAP)."""
    keep = cap_mask(caps.get("bounding"), "process.capabilities.bounding")
    for cap in range(last_cap() + 1):
        if not keep & (1 << cap):
            L.prctl(L.PR_CAPBSET_DROP, cap)


def set_user(user: dict[str, Any]) -> None:
    """setgroups/setresgid/setresuid to process.user, keeping caps across it."""
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    groups = user.get("additionalGids") or []
    try:
        L.setgroups(groups)
    except PermissionError:
        if groups:
            raise
    L.setresgid(gid)
    L.setresuid(uid)


def apply_caps(caps: dict[str, list[str]], disabled: Switches = frozenset()) -> None:
    """Effective, permitted and inheritable with capset; then raise the ambient set."""
    eff = cap_mask(caps.get("effective"), "process.capabilities.effective")
    perm = cap_mask(caps.get("permitted"), "process.capabilities.permitted")
    inh = cap_mask(caps.get("inheritable"), "process.capabilities.inheritable")
    L.capset(eff, perm, inh)
    ambient = caps.get("ambient") or []
    if ambient and "ambient" not in disabled:
        L.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_CLEAR_ALL)
        for n in ambient:
            L.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_RAISE, CAP_NUMBER[n])


def finalize(proc: Process, disabled: Switches) -> None:
    """Bounding set, ids, then the other capability sets (see module doc)."""
    caps = proc.get("capabilities") or {}
    drop = "caps" not in disabled
    if drop:
        drop_bounding(caps)
    L.prctl(L.PR_SET_KEEPCAPS, 1)
    set_user(proc.get("user") or {})
    L.prctl(L.PR_SET_KEEPCAPS, 0)
    if drop:
        apply_caps(caps, disabled)
    elif (proc.get("user") or {}).get("uid", 0) != 0:
        # switch "caps": a non-root user keeps every capability it had as root, across execve
        # too (ambient). The uid change emptied the effective set; the permitted one was
        # kept, and may lack what the runtime's caller lacked: capset can only keep, never add.
        kept = _permitted()
        L.capset(kept, kept, kept)
        for cap in range(last_cap() + 1):
            if kept & (1 << cap):
                L.prctl(L.PR_CAP_AMBIENT, L.PR_CAP_AMBIENT_RAISE, cap)


def _permitted() -> int:
    """This process's permitted set, as /proc/self/status shows it."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapPrm:"):
                return int(line.split()[1], 16)
    return 0


def no_new_privs() -> None:
    L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)


def environment(proc: Process, disabled: Switches = frozenset()) -> dict[str, str]:
    """process.env as a dict, with HOME filled in from /etc/passwd like runc."""
    if "env" in disabled:  # the negative control: the runtime's own environment leaks in
        return dict(os.environ)
    env = {}
    for e in proc.get("env") or []:
        k, _, v = e.partition("=")
        env[k] = v
    if not env.get("HOME") and "home" not in disabled:  # missing or empty, as runc's setupUser
        uid = (proc.get("user") or {}).get("uid", 0)
        env["HOME"] = "/"
        try:
            with open("/etc/passwd") as f:
                for line in f:
                    p = line.split(":")
                    if len(p) > 5 and p[2] == str(uid):
                        env["HOME"] = p[5]
                        break
        except OSError:
            pass
    return env


def lookup(arg0: str, env: dict[str, str], cwd: str = "/") -> str:
    """Find the executable like execvp would in ``cwd``, the process's working directory (we are
    not there yet): a name with a slash is taken relative to it, a bare name searched in the
    container's PATH (a relative PATH entry, too, is relative to it)."""
    if "/" in arg0:
        path = os.path.join(cwd, arg0)
        if not os.path.exists(path):
            raise Error('exec: "%s": stat %s: no such file or directory' % (arg0, arg0))
        return path
    for d in env.get("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin").split(":"):
        p = os.path.join(cwd, d or ".", arg0)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    raise Error('exec: "%s": executable file not found in $PATH' % arg0)


def check_cwd(cwd: str) -> None:
    """Refuse a cwd outside the container's root (CVE-2024-21626).

    A cwd such as /proc/self/fd/N resolves through a descriptor the runtime
    still holds, possibly a host directory.  The kernel's getcwd then says
    the directory is unreachable from our root (glibc: ENOENT).
    """
    try:
        where = os.getcwd()
    except FileNotFoundError:
        where = None
    if not where or not where.startswith("/"):
        raise Error("process.cwd %r is outside the container's root filesystem" % cwd)
