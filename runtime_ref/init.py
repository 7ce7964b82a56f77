"""The container's init: what runs between clone and exec, top to bottom.

This is runtime-ref's ``standard_init_linux.go``.  The runtime (parent, see
spawn.py) has already made the cgroups and cloned us into new namespaces; it
then writes our uid/gid maps and cgroup membership.  From there on, the body
of ``_init`` is the order of the remaining steps, and each comment says why
the step sits where it does; the last ones, which make the process itself,
are ``process.finish``, shared with ``exec``.

Protocol on the two pipes (one-byte tags, always in this order):
parent -> init ``M`` (uid/gid maps written; only with a new user namespace),
``C`` (in the cgroups, their limits written; followed by the seccomp program:
flags and length, 4 bytes each little-endian, then the BPF, length 0 for
none), ``G`` (hooks done: go on);
init -> parent ``H`` (mounts done: run prestart/createRuntime hooks, answer
``G``), ``R`` (ready: everything but exec is done), ``E<message>`` (failed).

On cgroup v1 the init joins its cgroups itself, first thing, through files
the runtime opened (cgroups.self_join_files: moving oneself skips the
kernel's RCU grace period, 5-12 ms here).  On v2 the runtime moves it, and
that costs the grace period, so the init does not wait for ``C`` until it
needs it: its mounts are built while the runtime is still blocked in that write.
"""
from __future__ import annotations

import os

from . import cgroups, namespaces, process, rootfs
from . import linux as L
from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from .hints import InitContext


def _send(ctx: InitContext, msg: bytes) -> None:
    to_parent = ctx.get("to_parent")
    if to_parent is None:
        raise OSError("the runtime has already returned")
    os.write(to_parent, msg)


def _expect(ctx: InitContext, tag: bytes) -> None:
    if os.read(ctx["from_parent"], 1) != tag:
        os._exit(1)  # the runtime died or gave up on us


def _in_cgroups(ctx: InitContext) -> None:
    """Wait for ``C``: in our cgroups, their limits written; it carries the seccomp program."""
    if not ctx.get("in_cgroups"):
        _expect(ctx, b"C")
        header = _read_exactly(ctx["from_parent"], 8)
        flags, size = int.from_bytes(header[:4], "little"), int.from_bytes(header[4:], "little")
        ctx["seccomp"] = (_read_exactly(ctx["from_parent"], size), flags) if size else None
        ctx["in_cgroups"] = True


def _read_exactly(fd: int, n: int) -> bytes:
    """n bytes from the pipe (a program of up to 32 KiB may come in parts)."""
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            os._exit(1)  # the runtime died or gave up on us
        data += chunk
    return data


def main(ctx: InitContext) -> NoReturn:
    """Never returns: execs the container process or exits non-zero."""
    try:
        _init(ctx)
    except BaseException as e:  # report to the runtime, which prints it
        msg = str(e) if isinstance(e, (Error, OSError)) else "%s: %s" % (type(e).__name__, e)
        if not isinstance(e, Error):
            msg = "container init (%s): %s" % (ctx.get("step", "start"), msg)
        try:
            _send(ctx, b"E" + msg.encode(errors="replace"))
        except OSError:
            os.write(2, ("runtime-ref: %s\n" % msg).encode(errors="replace"))
        os._exit(127 if isinstance(e, OSError) else 1)


def _init(ctx: InitContext) -> NoReturn:
    config, disabled, nss = ctx["config"], ctx["disabled"], ctx["nss"]
    linux = config.get("linux") or {}
    # Die with the runtime while it still supervises us (a crash must not
    # leave a half-built container behind); cleared again before we block.
    L.prctl(L.PR_SET_PDEATHSIG, 9)

    ctx["step"] = "cgroups"
    # 0. v1: into our cgroups before anything else (nothing of ours escapes their limits);
    #    the limits themselves may still be being written (``C`` says when they are).
    cgroups.join_self(ctx.get("cgroup_fds") or [])

    ctx["step"] = "user namespace"
    # 1. Wait until the runtime has written our uid/gid maps: nothing in a
    #    new user namespace works before.
    if nss.get("user", 1) is None:
        _expect(ctx, b"M")
    namespaces.join(ctx.get("join_fds") or {}, typed="ns-path-type" not in disabled)
    if "user" in nss:
        # become the namespace's root (uid 0 inside): mounts and mknods
        # below are then owned by the container's root, not by "nobody"
        L.setresgid(0)
        L.setresuid(0)
    if nss.get("cgroup", 1) is None:
        # after joining our cgroup, so that it becomes the root of our view
        if not ctx.get("cgroup_fds"):
            _in_cgroups(ctx)  # v2: the runtime moves us
        L.unshare(L.CLONE_NEWCGROUP)

    ctx["step"] = "hostname"
    # 2. Identity: only in a UTS namespace of our own (else we would rename the host).
    if nss.get("network", 1) is None:
        # a new network namespace has only `lo`, and it starts down
        L.loopback_up()
    if "uts" in nss:
        if config.get("hostname"):
            L.sethostname(config["hostname"])
        if config.get("domainname"):
            L.setdomainname(config["domainname"])

    ctx["step"] = "rootfs"
    # 3. The filesystem: mounts inside the rootfs, /dev, then the hooks that
    #    want to see the mounts but not yet the pivot.
    root = rootfs.prepare(config, ctx["bundle"], disabled, ctx)
    if config.get("hooks"):
        _learn_host_pid(ctx)
    if ctx["hooks_before_pivot"]:
        _in_cgroups(ctx)
        _send(ctx, b"H")
        _expect(ctx, b"G")
        from . import hooks
        hooks.run(config, "createContainer", ctx["hook_state"], disabled=disabled)
    rootfs.enter(root, use_pivot=ctx["mntns"] and "pivot_root" not in disabled)
    if ctx["mntns"]:
        rootfs.root_propagation(linux.get("rootfsPropagation"))
    console_slave = None
    console_fd = ctx.get("console_fd")
    if console_fd is not None:
        ctx["step"] = "console"
        # The terminal, once inside the root: /dev/ptmx is now the container's
        # devpts, and /dev still writable for the /dev/console bind.
        from . import console
        console_slave = console.open_pty(console_fd, config["process"].get("consoleSize"),
                                         bind_console=ctx["mntns"])

    ctx["step"] = "cwd"
    # 4. After the pivot, paths are container paths.  A missing cwd is made
    #    now, while the root may still be written (runc's prepareRootfs): a
    #    read-only root below would refuse it (EROFS).
    os.makedirs(process.process_cwd(config["process"], disabled), 0o755, exist_ok=True)

    ctx["step"] = "sysctl"
    # 5. sysctls: /proc/sys becomes read-only just below.
    rootfs.write_sysctl(linux.get("sysctl"))

    ctx["step"] = "masked/readonly paths"
    if "readonly-paths" not in disabled:
        rootfs.readonly(linux.get("readonlyPaths") or [])
    if "masked-paths" not in disabled:
        rootfs.mask(linux.get("maskedPaths") or [])
    if config["root"].get("readonly") and "readonly-rootfs" not in disabled:
        rootfs.readonly_root()

    # 6. The process: session, limits, user, capabilities, no_new_privs,
    #    seccomp, cwd, descriptors (process.py), waiting in _ready for `start`
    #    before the exec.  The seccomp program comes with ``C``: wait for it.
    _in_cgroups(ctx)
    process.finish(config["process"], disabled, ctx.get("seccomp"), ctx, lambda: _ready(ctx),
                   pass_fds=ctx.get("pass_fds", 0), linux=linux, terminal=console_slave)


def _learn_host_pid(ctx: InitContext) -> None:
    """The state a container-side hook reads names the init's host pid (getpid() answers 1 in a
    PID namespace): what /proc/self is in the runtime's /proc, still mounted here until the pivot."""
    try:
        ctx["hook_state"]["pid"] = int(os.readlink("/proc/self"))
    except (OSError, ValueError):
        pass  # no /proc of the runtime's: the state says 0, as before


def _ready(ctx: InitContext) -> None:
    """Report ready, then block on exec.fifo until ``start`` (``run`` has no fifo)."""
    ctx["step"] = "exec.fifo"
    # The process must not start before it is limited by its cgroups.
    _in_cgroups(ctx)
    L.prctl(L.PR_SET_PDEATHSIG, 0)
    # `create` returns on R: from then on our errors go to stderr (see main).
    _send(ctx, b"R")
    to_parent = ctx["to_parent"]
    ctx["to_parent"] = None
    if to_parent is not None:
        os.close(to_parent)
    fifo_dir = ctx.get("fifo_dir")
    if fifo_dir is not None:
        fd = os.open("exec.fifo", os.O_WRONLY | os.O_CLOEXEC, dir_fd=fifo_dir)
        os.write(fd, b"0")
        os.close(fd)
    config = ctx["config"]
    if (config.get("hooks") or {}).get("startContainer"):
        from . import hooks
        hooks.run(config, "startContainer", dict(ctx["hook_state"], status="running"),
                  disabled=ctx["disabled"])
