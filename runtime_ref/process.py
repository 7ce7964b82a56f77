"""Phase: finish the process and exec — one step for the init and for ``exec``.

Whoever calls ``finish`` is already in the container's namespaces, cgroups
and root (the init after pivot_root and the masked and read-only paths;
``exec`` after setns and a chroot into the init's root), still as the
namespace's root with every capability.  What is left makes the process
itself, in the order of runc's ``standard_init_linux.go`` and
``setns_init_linux.go``.  The init and ``exec`` share this one function, so
an ``exec``'d process is made exactly like the container's first one.
"""
from __future__ import annotations

import os

from . import attributes, lsm, security
from . import linux as L

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, NoReturn

    from .hints import Process, Progress, SeccompProgram, Switches


def finish(proc: Process, disabled: Switches, seccomp: SeccompProgram | None,
           progress: Progress, ready: Callable[[], None] | None = None, pass_fds: int = 0,
           linux: dict[str, Any] | None = None, terminal: int | None = None) -> NoReturn:
    """Set up ``proc`` in this process and exec it; never returns.

    ``progress["step"]`` names the step under way (the init's error message
    says which one failed).  ``ready`` is called once only the last seccomp
    filter and execve remain: the init reports to the runtime there and waits
    for ``start``.  ``pass_fds``: how many descriptors from 3 on the process
    keeps (``--preserve-fds``); every other one above 2 is closed at exec.
    ``linux``: config.json's ``linux`` object (personality, memory policy).
    ``terminal``: the pty slave (process.terminal, console.py): the session's
    controlling terminal and the process's stdio.
    """
    progress["step"] = "session"
    # A session (and process group) of its own, as runc's nsexec gives both the
    # init and exec'd processes: the caller's group lies outside the container
    # (getpgrp() would read 0 in a PID namespace), and job control, a terminal
    # or a `kill -- -PGID` from the caller must not reach into it.
    if "session" not in disabled:
        os.setsid()
    if terminal is not None:
        # Only a session leader may take a controlling terminal (TIOCSCTTY):
        # without the setsid above (switch ``session``) the pty is stdio only.
        from . import console
        console.attach(terminal, controlling="session" not in disabled)

    progress["step"] = "rlimits and attributes"
    # Limits and kernel attributes first: lowering oom_score_adj and raising a
    # hard rlimit need CAP_SYS_RESOURCE, a negative nice or a real-time
    # scheduler CAP_SYS_NICE, which the user and capability step drops.
    attributes.apply(proc, linux or {}, disabled)
    if "rlimits" not in disabled:
        security.set_rlimits(proc.get("rlimits"))
    progress["step"] = "environment"
    # Still as root: read /etc/passwd (HOME) and search PATH before the user
    # may lose the right to.  (A missing cwd was made by the init before the
    # root went read-only, as runc's prepareRootfs does; exec makes none.)
    env = security.environment(proc, disabled)
    args = proc["args"]
    cwd = process_cwd(proc, disabled)
    path = security.lookup(args[0], env, "/" if "args-lookup" in disabled else cwd)

    progress["step"] = "LSM label"
    # The AppArmor profile or SELinux label the execve below takes on (runc applies it here, before
    # no_new_privs: from unconfined any profile may be entered on exec, with no_new_privs too).
    lsm.apply(proc, disabled)

    progress["step"] = "no_new_privs/seccomp"
    # no_new_privs, then seccomp: without no_new_privs loading a filter needs
    # CAP_SYS_ADMIN, so it must happen before capabilities go; with it, the
    # filter waits until the very end so that it never has to allow what the
    # runtime itself still does.
    nnp = (bool(proc.get("noNewPrivileges")) or "force-nnp" in disabled) and "nnp" not in disabled
    if nnp:
        security.no_new_privs()
    if seccomp and not nnp:
        L.seccomp_load(*seccomp)

    progress["step"] = "user and capabilities"
    # Drop to the configured user and capabilities (security.py says in what
    # order); the umask and the cwd are the user's, so they come after.
    security.finalize(proc, disabled)
    umask = None if "umask" in disabled else (proc.get("user") or {}).get("umask")
    os.umask(0o022 if umask is None else umask)
    progress["step"] = "cwd"
    os.chdir(cwd)
    if "cwd-check" not in disabled:
        security.check_cwd(cwd)

    if ready is not None:
        ready()

    progress["step"] = "descriptors"
    # Only stdio and the descriptors the caller asked to pass reach the
    # process; whatever else the runtime was started with (or opened) stays
    # behind: close-on-exec, as runc's CloseExecFrom, so that ours (exec's
    # error pipe) still work until execve succeeds.
    if "close-fds" not in disabled:
        for fd in range(3, 3 + pass_fds):
            os.set_inheritable(fd, True)  # checked open by the CLI
        cloexec_from(3 + pass_fds)

    progress["step"] = "seccomp"
    # The filter, last thing before exec when no_new_privs allows it.
    if seccomp and nnp:
        L.seccomp_load(*seccomp)
    progress["step"] = "exec"
    os.execve(path, args, env)


def process_cwd(proc: Process, disabled: Switches) -> str:
    """The working directory the process starts in (switch ``cwd``: always /)."""
    return "/" if "cwd" in disabled else (proc.get("cwd") or "/")


def cloexec_from(first: int) -> None:
    """Mark every descriptor numbered ``first`` or above close-on-exec.

    The ones open are listed in /proc/self/fd (one may lie above any rlimit:
    the caller's limit can be higher than the container's); without /proc
    they are closed outright, every number up to the descriptor limit.
    """
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        os.closerange(first, max(L.getrlimit(security.RLIMITS["RLIMIT_NOFILE"])[1] & 0x7FFFFFFF, 65536))
        return
    for fd in fds:
        if fd >= first:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass  # the listing's own descriptor, closed already
