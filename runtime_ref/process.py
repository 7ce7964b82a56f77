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

from . import linux as L
from . import security

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, NoReturn

    from .hints import Process, Progress, SeccompProgram, Switches


def finish(proc: Process, disabled: Switches, seccomp: SeccompProgram | None,
           progress: Progress, ready: Callable[[], None] | None = None) -> NoReturn:
    """Set up ``proc`` in this process and exec it; never returns.

    ``progress["step"]`` names the step under way (the init's error message
    says which one failed).  ``ready`` is called once only the last seccomp
    filter and execve remain: the init reports to the runtime there and waits
    for ``start``.
    """
    progress["step"] = "rlimits"
    # Limits first: lowering oom_score_adj and raising a hard rlimit need
    # CAP_SYS_RESOURCE, which the user and capability step drops.
    if proc.get("oomScoreAdj") is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(proc["oomScoreAdj"]))
    if "rlimits" not in disabled:
        security.set_rlimits(proc.get("rlimits"))
    # Still as root: read /etc/passwd (HOME) and search PATH before the user
    # may lose the right to, and make a missing cwd where the container's root
    # can (runc creates it while preparing the rootfs).
    env = security.environment(proc, disabled)
    args = proc["args"]
    path = security.lookup(args[0], env)
    cwd = "/" if "cwd" in disabled else (proc.get("cwd") or "/")
    os.makedirs(cwd, exist_ok=True)

    progress["step"] = "no_new_privs/seccomp"
    # no_new_privs, then seccomp: without no_new_privs loading a filter needs
    # CAP_SYS_ADMIN, so it must happen before capabilities go; with it, the
    # filter waits until the very end so that it never has to allow what the
    # runtime itself still does.
    nnp = bool(proc.get("noNewPrivileges")) and "nnp" not in disabled
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
    os.chdir(cwd)
    if "cwd-check" not in disabled:
        security.check_cwd(cwd)

    if ready is not None:
        ready()

    progress["step"] = "seccomp"
    # The filter, last thing before exec when no_new_privs allows it.
    if seccomp and nnp:
        L.seccomp_load(*seccomp)
    os.execve(path, args, env)
