"""The runtime's side of the init handshake: clone the init, then see it to ready.

``spawn`` is called by ``create`` once the state directory and the cgroups
exist.  It clones the init into its new namespaces (one ``clone``), then,
while the init builds its mounts: writes the uid/gid maps (``M``), writes the
cgroups' limits and compiles the seccomp filter (``C``, which carries it; on
v2 it first places the init in the cgroups, on v1 the init joins by itself:
cgroups.self_join_files), runs the prestart and
createRuntime hooks when the init asks (``H`` / ``G``), and returns when the
init says it is ready (``R``) or raises its error (``E``).  The protocol is
described in init.py, which is the other side.
"""
from __future__ import annotations

import os

from . import cgroups, namespaces
from . import linux as L
from .errors import Error
from .state import OCI_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from typing import Any, Callable, NoReturn

    from .hints import CgroupSet, Config, InitContext, Namespaces, Switches
    from .state import Container
else:
    import _signal as signal  # the C module: `signal` imports enum (~3 ms)

LEAKY_FD = 7  # where the cwd-check control leaves the state directory's descriptor

_reserved_leaky_fd = False


def reserve_leaky_fd() -> None:
    """Hold LEAKY_FD (on /dev/null) from the start of a cwd-check control run, so the
    state directory's descriptor can be put there later whatever else gets opened."""
    global _reserved_leaky_fd
    try:
        os.fstat(LEAKY_FD)
        return  # taken already (an inherited descriptor): leave it alone
    except OSError:
        pass
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    if fd != LEAKY_FD:
        os.dup2(fd, LEAKY_FD, inheritable=False)
        os.close(fd)
    _reserved_leaky_fd = True


def _open_fifo_dir(c: Container, disabled: Switches) -> int:
    """The state directory, for the init to open exec.fifo in after the pivot."""
    fifo_dir = os.open(c.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    if "cwd-check" in disabled and _reserved_leaky_fd:
        # The negative control of CVE-2024-21626 plays runc < 1.1.12, whose leaked host
        # directory fd had a stable number: put ours at that number, so the control
        # does not depend on which descriptors this process happens to hold.
        os.dup2(fifo_dir, LEAKY_FD, inheritable=False)
        os.close(fifo_dir)
        fifo_dir = LEAKY_FD
    return fifo_dir


def spawn(c: Container, config: Config, bundle: str, disabled: Switches, nss: Namespaces,
          seccomp: Config | None, cg: CgroupSet, fifo: bool, pass_fds: int = 0,
          console_fd: int | None = None) -> int:
    """Clone the init and walk it through the handshake; returns its pid once it is ready.

    ``seccomp``: the ``linux.seccomp`` to compile for the init (None: no filter).
    ``pass_fds``: how many of our descriptors from 3 on the container keeps (the rest are closed).
    ``console_fd``: connected to --console-socket (process.terminal); the init sends the pty's
    master on it, and our copy is closed after the clone.
    """
    try:
        return _spawn(c, config, bundle, disabled, nss, seccomp, cg, fifo, pass_fds, console_fd)
    finally:
        if console_fd is not None:
            os.close(console_fd)


def _spawn(c: Container, config: Config, bundle: str, disabled: Switches, nss: Namespaces,
           seccomp: Config | None, cg: CgroupSet, fifo: bool, pass_fds: int,
           console_fd: int | None) -> int:
    hooks = config.get("hooks") or {}
    hook_state = {"ociVersion": OCI_VERSION, "id": c.id, "status": "creating", "pid": 0,
                  "bundle": bundle, "annotations": config.get("annotations") or {}}
    join_fds = namespaces.open_joins(nss, check_type="ns-path-type" not in disabled)
    # v1: the init joins its cgroups itself, first thing (cgroups.self_join_files says why);
    # v2, or rootless with a time namespace (the holder's child is the init): we move it
    cgroup_fds = [] if _time_in_own_userns(nss) else cgroups.self_join_files(cg)
    from_parent, to_init = os.pipe()
    from_init, to_parent = os.pipe()
    fifo_dir = _open_fifo_dir(c, disabled) if fifo else None
    ctx: InitContext = {
        "config": config, "bundle": bundle, "disabled": disabled, "nss": nss,
        "seccomp": None, "cgroups": cg, "cgroup_fds": cgroup_fds, "pass_fds": pass_fds,
        "mntns": "mount" in nss, "userns": "user" in nss, "cgroupns": "cgroup" in nss,
        "join_fds": {t: fd for t, fd in join_fds.items() if t not in ("pid", "time")},
        "from_parent": from_parent, "to_parent": to_parent, "fifo_dir": fifo_dir,
        "hooks_before_pivot": bool(hooks.get("prestart") or hooks.get("createRuntime")
                                   or hooks.get("createContainer")),
        "hook_state": hook_state, "console_fd": console_fd}
    # Everything the init will need is imported now: once in a user namespace
    # it may not be allowed to read Python's own files (e.g. under /root).
    if console_fd is not None:
        import fcntl  # noqa: F401
        import socket  # noqa: F401  (init: console.open_pty)
        import struct  # noqa: F401
        import termios  # noqa: F401

        from . import console  # noqa: F401

    from . import init
    if any(hooks.values()):
        import subprocess  # noqa: F401

        from . import hooks as _hooks  # noqa: F401
        from . import jsonfast  # noqa: F401
    holder: _Holder | None = None
    if _time_in_own_userns(nss):  # rootless: the holder makes both, then the init (see _Holder)
        restore = namespaces.before_clone({t: v for t, v in nss.items() if t != "time"}, join_fds, config)
    else:
        restore = namespaces.before_clone(nss, join_fds, config)
    try:
        if _time_in_own_userns(nss):
            holder = _Holder(ctx, config, namespaces.clone_flags(nss) & ~L.CLONE_NEWUSER,
                             (to_init, from_init, from_parent, to_parent))
            pid = holder.pid
        else:
            pid = L.clone(namespaces.clone_flags(nss))
            if pid == 0:
                os.close(to_init)
                os.close(from_init)
                init.main(ctx)  # never returns (nor runs the finally below: it ends in _exit)
    finally:
        namespaces.after_clone(restore)
    os.close(from_parent)
    os.close(to_parent)
    for fd in [*join_fds.values(), *cgroup_fds]:
        os.close(fd)
    if fifo_dir is not None:
        os.close(fifo_dir)
    hook_state["pid"] = pid
    try:
        _handshake(pid, config, disabled, nss, cg, hook_state, to_init, from_init, holder is None,
                   move_init=not cgroup_fds, seccomp=seccomp)
    except BaseException:
        if holder is not None:
            holder.release()  # the init is ours from here (we are its subreaper)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(to_init)
        os.close(from_init)
    if holder is not None:
        holder.release()
    return pid


def _time_in_own_userns(nss: Namespaces) -> bool:
    """Rootless, with new user and time namespaces: the time namespace must belong to the new user
    namespace (only there has an unprivileged runtime CAP_SYS_ADMIN), so it is made inside it."""
    return os.geteuid() != 0 and nss.get("user", 1) is None and nss.get("time", 1) is None


class _Holder:
    """Rootless with a time namespace: a child that makes the container's user namespace, has its
    maps written, makes the time namespace inside it (offsets written while it is empty), and
    clones the init there with the other namespaces.  It lives until the init is ready (the init
    dies with its parent until then), then exits; we are the init's subreaper, so it is ours after.
    """

    def __init__(self, ctx: InitContext, config: Config, flags: int, parent_fds: tuple[int, ...]) -> None:
        L.prctl(L.PR_SET_CHILD_SUBREAPER, 1)
        up_r, up_w = os.pipe()
        down_r, self._down = os.pipe()
        self._hpid = os.fork()
        if self._hpid == 0:
            os.close(up_r)
            os.close(self._down)
            self._child(ctx, config, flags, parent_fds, up_w, down_r)
        os.close(up_w)
        os.close(down_r)
        try:
            if os.read(up_r, 1) != b"u":
                raise Error("the user namespace for the time namespace: " + _said(up_r))
            namespaces.write_id_maps(self._hpid, config)
            os.write(self._down, b"m")
            msg = os.read(up_r, 64)
            if not msg.startswith(b"p"):
                raise Error((msg[1:] or b"its maker exited").decode(errors="replace") + _said(up_r))
            self.pid = int(msg[1:])
        except BaseException:
            self.release()
            raise
        finally:
            os.close(up_r)

    @staticmethod
    def _child(ctx: InitContext, config: Config, flags: int, parent_fds: tuple[int, ...],
               up: int, down: int) -> NoReturn:
        from . import init
        try:
            L.unshare(L.CLONE_NEWUSER)
            os.write(up, b"u")
            if os.read(down, 1) != b"m":
                os._exit(1)
            namespaces.new_time(config)
            pid = L.clone(flags)
            if pid == 0:
                os.close(up)
                os.close(down)
                for fd in parent_fds[:2]:  # the runtime's ends of the init's pipes
                    os.close(fd)
                init.main(ctx)
            for fd in parent_fds:  # ours must not keep the init's pipes open
                os.close(fd)
            os.write(up, b"p%d" % pid)
            os.read(down, 1)  # until release(): the init dies with us while it is not ready
            os._exit(0)
        except BaseException as e:
            try:
                os.write(up, b"E" + str(e).encode(errors="replace")[:4000])
            finally:
                os._exit(1)

    def release(self) -> None:
        """Let the holder exit, and reap it."""
        if self._down >= 0:
            os.close(self._down)
            self._down = -1
            os.waitpid(self._hpid, 0)


def _said(fd: int) -> str:
    try:
        return os.read(fd, 4096).decode(errors="replace")
    except OSError:
        return ""


def _handshake(pid: int, config: Config, disabled: Switches, nss: Namespaces, cg: CgroupSet,
               hook_state: dict[str, Any], to_init: int, from_init: int, write_maps: bool = True,
               move_init: bool = True, seccomp: Config | None = None) -> None:
    """Our half of the protocol in init.py, until the init is ready (``R``) (``write_maps``: False
    when the init was born in a user namespace whose maps are already written: _Holder;
    ``move_init``: False when the init joins its cgroups itself, cgroups.self_join_files;
    ``seccomp``: the ``linux.seccomp`` whose program goes with ``C``)."""
    # Moving a process into a cgroup waits for an RCU grace period (5-12 ms): a
    # thread does it while we write the maps and limits and the init its mounts.
    joined = _Background(cgroups.add, cg["leaves"], pid) if move_init else None
    try:
        if nss.get("user", 1) is None:
            if write_maps:
                namespaces.write_id_maps(pid, config)
            os.write(to_init, b"M")
        linux = config.get("linux") or {}
        cgroups.set_limits(cg, linux.get("resources") or {}, disabled, linux.get("devices") or [])
        if joined is not None:
            joined.result()
        os.write(to_init, b"C" + _seccomp_frame(seccomp, disabled))
    except BrokenPipeError:
        pass  # the init failed early: its message is waiting below
    finally:
        if joined is not None:
            joined.result(raise_error=False)
    while True:
        msg = os.read(from_init, 65536)
        if msg == b"H":
            from . import hooks as H
            H.run(config, "prestart", hook_state, disabled=disabled)
            H.run(config, "createRuntime", hook_state, disabled=disabled)
            os.write(to_init, b"G")
        elif msg == b"R":
            return
        elif msg.startswith(b"E"):
            raise Error(msg[1:].decode(errors="replace"))
        else:
            raise Error("container init exited before it was ready")


def _seccomp_frame(sc: Config | None, disabled: Switches) -> bytes:
    """The init's seccomp program as ``C`` carries it: flags and length (4 bytes each), the BPF.

    Compiled here, after the clone: the filter is the init's last step, and
    assembling it (a profile of a few hundred instructions, and the system
    call tables) takes us about as long as the init's mounts take it, so the
    two overlap instead of adding up.  A config the compiler refuses fails
    the create as before; the half-built init is killed (spawn).
    """
    if not sc:
        return bytes(8)
    from . import seccomp
    prog, flags = seccomp.compile(sc, ignore_args="seccomp-args" in disabled)
    return flags.to_bytes(4, "little") + len(prog).to_bytes(4, "little") + prog


class _Background:
    """Run one call in a thread (``_thread``: ``threading`` costs ms to import)."""

    def __init__(self, fn: Callable[..., object], *args: object) -> None:
        import _thread
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._error: BaseException | None = None
        _thread.start_new_thread(self._run, (fn, args))

    def _run(self, fn: Callable[..., object], args: tuple[object, ...]) -> None:
        try:
            fn(*args)
        except BaseException as e:
            self._error = e
        finally:
            self._lock.release()

    def result(self, raise_error: bool = True) -> None:
        """Wait for the call to end; re-raise its exception unless told not to."""
        if self._lock.acquire():
            self._lock.release()
        if raise_error and self._error is not None:
            raise self._error
