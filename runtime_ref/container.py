"""The lifecycle verbs: create, start, run, kill, delete.

``create`` is the heart: it validates everything it can *before* a process
exists (so most errors cost little to clean up), makes the state directory
and exec.fifo, builds the cgroups, has ``spawn`` clone the init and see it
through the handshake until it is ready, i.e. blocked on exec.fifo.  Then it
records the state and exits; no runtime process stays behind.  ``start``
opens the fifo's read end, which lets the init exec the container's process.
``delete`` undoes what ``create`` did.  (``exec`` is exec.py.)
"""
from __future__ import annotations

import os
import time

from . import cgroups, spec
from .errors import Error
from .state import OCI_VERSION, Container, starttime

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal

    from .hints import CgroupSet, Config, Launch, Namespaces, Switches
else:
    import _signal as signal  # the C module: `signal` imports enum (~3 ms)

#: where a container goes when its config names no cgroupsPath: DEFAULT_CGROUP_PARENT/<id>
DEFAULT_CGROUP_PARENT = "/runtime-ref"

#: the signals ``run`` and ``exec`` pass on to the process they wait for
FORWARD = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")


def _prepare(config: Config, disabled: Switches, nss: Namespaces) -> Config | None:
    """Every check that does not need a process; returns ``linux.seccomp`` when a filter is to be
    made (spawn compiles and checks it while the init builds its mounts, see spawn._handshake)."""
    from . import attributes, lsm, rootfs, security
    proc = config["process"]
    security.check(proc, spec.version_at_least(config, (1, 1)), disabled)
    attributes.check(config, proc, disabled)
    lsm.check(config, proc, disabled)
    rootfs.check_sysctl((config.get("linux") or {}).get("sysctl"), nss)
    for m in config.get("mounts") or []:
        if not (m.get("destination") or "").startswith("/"):
            raise Error("mounts: destination %r must be absolute" % m.get("destination"))
        rootfs.parse_options(m.get("options"))
    sc: Config | None = (config.get("linux") or {}).get("seccomp")
    return sc if sc and "seccomp" not in disabled else None


def create(root: str, cid: str, bundle: str | None, disabled: Switches,
           pid_file: str | None = None, fifo: bool = True, launch: Launch | None = None,
           ) -> tuple[Container, Config]:
    """Build the container up to its blocked init; returns the Container and its
    config (without hooks under switch ``hooks``).

    With ``fifo=False`` (``run``) the init does not wait for ``start``.
    ``launch`` says what the caller handed over beyond the bundle: how many
    descriptors from 3 on go to the container (``--preserve-fds``, systemd's
    ``LISTEN_FDS``; every other one is closed before exec) and where a terminal's
    master goes (``--console-socket``, see console.py).
    """
    from .spawn import spawn
    launch = launch or {"pass_fds": 0, "listen_fds": 0, "console_socket": None, "detach": True}
    bundle = os.path.abspath(bundle or ".")
    config, raw = spec.load(bundle, disabled)
    _switch_hooks(config, disabled)
    if disabled:  # negative controls that make us ignore part of the config
        from . import ignore
        ignore.apply(config, disabled)
    terminal = bool(config["process"].get("terminal"))
    if "terminal" not in disabled and (terminal or launch.get("console_socket")):
        # (the switch: --console-socket left unused, nothing refused)
        from . import console
        console.check(config["process"], launch.get("console_socket"), launch.get("detach", True))
    if launch["listen_fds"]:  # socket activation, as runc: the process learns which fds are its sockets
        config["process"]["env"] = list(config["process"].get("env") or []) + [
            "LISTEN_FDS=%d" % launch["listen_fds"], "LISTEN_PID=1"]
    if "stdio" in disabled:
        _hand_over_stdio()
    nss = spec.namespaces(config, disabled)
    c = Container(root, cid)
    os.makedirs(root, 0o700, exist_ok=True)
    try:
        os.mkdir(c.dir, 0o711)
    except FileExistsError:
        raise Error('container "%s" already exists' % cid) from None
    pid = 0
    rootfs_path = os.path.realpath(os.path.join(bundle, config["root"]["path"]))
    try:
        with open(os.path.join(c.dir, "config.json"), "wb") as f:
            f.write(raw)
        if fifo:
            os.mkfifo(c.fifo, 0o622)
            os.chmod(c.fifo, 0o622)  # writable by the container's root even when it is not ours
        linux = config.get("linux") or {}
        cgpath = _cgroups_path(linux, cid, disabled)
        c.data = {"ociVersion": OCI_VERSION, "id": cid, "pid": 0, "bundle": bundle,
                  "rootfs": rootfs_path, "annotations": config.get("annotations") or {},
                  "cgroups_path": cgpath, "disabled": sorted(disabled), "host_mounts": "mount" not in nss,
                  "namespaces": sorted(nss), "created": time.time()}
        c.save()  # before anything is made on the host: a killed create can still be deleted
        # On v2, moving the init into its cgroup waits for an RCU grace period (5-12 ms
        # here): create starts that wait early (warm_up), and we do our Python work
        # meanwhile (on v1 the init joins by itself, without it: cgroups.self_join_files).
        # (Not with a time namespace: joining one needs a single-threaded runtime.)
        cg = c.data["cgroups"] = _make_cgroups(cgpath, linux, disabled, warm_up="time" not in nss)
        c.save()
        seccomp = _prepare(config, disabled, nss)
        console_fd = None
        if terminal:  # connected before the clone: the init sends the pty master on it
            from . import console
            console_fd = console.connect(str(launch.get("console_socket")))
        pid = spawn(c, config, bundle, disabled, nss, seccomp, cg, fifo, launch["pass_fds"], console_fd)
        c.data["pid"] = pid
        c.data["starttime"] = starttime(pid)
        c.save()
        if pid_file and "pid-file" not in disabled:
            tmp = pid_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(pid))
            os.rename(tmp, pid_file)
    except BaseException:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        _destroy(c, config, run_hooks=False)
        raise
    return c, config


def _cgroups_path(linux: Config, cid: str, disabled: Switches) -> str | None:
    """Where the container's cgroups go: linux.cgroupsPath, or a path of our own.

    The spec leaves the default to the runtime ("MAY choose"); runc puts the
    container under its own cgroup, named by the id.  Ours is
    /runtime-ref/<id> from each hierarchy's root, whoever calls us, so that
    every container of this runtime is found in one place.  None (switch
    ``default-cgroup``): no cgroup of its own, the runtime's are kept.  A
    relative cgroupsPath goes below our own cgroup (cgroups.placement).
    Rootless (not uid 0) without a path: None too, as runc does — an
    unprivileged user can make no cgroup but in a subtree given to it, which
    only a path names.
    """
    given = str(linux.get("cgroupsPath") or "")
    dropped = not given.startswith("/") and "cgroups-path" in disabled  # the switch: a relative one
    if given and not dropped:
        return given
    if "default-cgroup" in disabled or cgroups.rootless():
        return None
    return DEFAULT_CGROUP_PARENT + "/" + cid


def _make_cgroups(cgpath: str | None, linux: Config, disabled: Switches, warm_up: bool) -> CgroupSet:
    if cgpath is None:
        if cgroups.rootless():  # the spec: a limit is applied, or the runtime fails
            cgroups.refuse_unplaced_limits(linux.get("resources") or {}, disabled)
        return cgroups.none()
    return cgroups.create(cgpath, linux.get("resources") or {}, disabled, linux.get("devices") or [],
                          warm_up=warm_up)


def _hand_over_stdio() -> None:
    """Switch ``stdio``: do to our stdio what gVisor's runsc does (fchown to its sandbox's user).

    Only regular files: a device such as the host's /dev/null must never change owner.
    """
    import stat
    for fd in (0, 1, 2):
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fchown(fd, 65534, 65534)
        except OSError:
            pass


def start(root: str, cid: str, disabled: Switches = frozenset()) -> None:
    """Let the blocked init go on to exec, then run the poststart hooks."""
    c = Container.load(root, cid)
    disabled = set(disabled) | set(c.data.get("disabled") or [])
    status = c.status()
    if status != "created":
        if "start-check" in disabled:
            return  # switch start-check: a runtime that answers success and does nothing
        raise Error("cannot start a container in state %s" % status)
    config = _config(c, disabled)
    if (config.get("hooks") or {}).get(HOST_START_CONTAINER):  # switch hook-namespace
        from . import hooks
        hooks.run(config, HOST_START_CONTAINER, c.oci_state(), disabled=disabled)
    if "cgroup-ownership" in disabled:
        _claim_current_cgroups(c)  # while the init waits: once it runs it may be gone
    import select
    fd = os.open(c.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        while True:
            if p.poll(50):
                if os.read(fd, 1) == b"0":
                    break
            if not c.alive():
                raise Error('container "%s" init died before it could start' % cid)
    finally:
        os.close(fd)
    os.unlink(c.fifo)
    _poststart(c, config, disabled)


def _claim_current_cgroups(c: Container) -> None:
    """Switch ``cgroup-ownership``: the cgroups the init is in now join those delete removes, as a
    runtime that reads them from /proc rather than remembering what it made."""
    cg = c.data.get("cgroups") or {}
    for d in cgroups.dirs_of(c.pid):
        if d not in cg.get("created", []):
            cg.setdefault("created", []).append(d)
    c.save()


def _poststart(c: Container, config: Config, disabled: Switches) -> None:
    """The poststart hooks, as the config's ociVersion has them (runtime.md, lifecycle).

    Up to runtime-spec 1.2.1 a failure is a warning and the container runs on
    (a MUST); 1.3.0 turned it around: an error, and the container is stopped.
    Switch ``poststart-warning``: fatal whatever the version, as runc 1.1 is.
    """
    if not (config.get("hooks") or {}).get("poststart"):
        return
    from . import hooks
    fatal = "poststart-warning" in disabled or spec.version_at_least(config, (1, 3))
    try:
        hooks.run(config, "poststart", c.oci_state(), fatal=fatal, disabled=disabled)
    except Error:
        _kill_and_wait(c)
        raise


def run(root: str, cid: str, bundle: str | None, disabled: Switches,
        pid_file: str | None = None, detach: bool = False, keep: bool = False,
        launch: Launch | None = None) -> int:
    """create + start in one go, then wait, clean up (unless ``keep``), and return the exit code."""
    if detach:
        create(root, cid, bundle, disabled, pid_file, fifo="exec-fifo" not in disabled, launch=launch)
        if "exec-fifo" not in disabled:
            start(root, cid, disabled)
        return 0
    c, config = create(root, cid, bundle, disabled, pid_file, fifo=False, launch=launch)
    pid = c.pid
    try:
        for name in FORWARD:
            signal.signal(getattr(signal, name), lambda s, f: os.kill(pid, s))
        _poststart(c, config, disabled)
        return wait_status(pid)
    finally:
        for name in FORWARD:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        if not keep and "run-cleanup" not in disabled:  # the switch: as if --keep
            _destroy(c, config, run_hooks=True)


def wait_status(pid: int) -> int:
    """Wait for a child; its exit status, or 128+N when a signal N killed it (the shell's convention)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def kill(root: str, cid: str, sig: int, all_processes: bool = False, disabled: Switches = frozenset()) -> None:
    """Signal the init (``--all``: every process in the container's cgroup)."""
    c = Container.load(root, cid)
    if not c.alive():
        if "kill-check" in disabled or "kill-check" in (c.data.get("disabled") or []):
            return  # switch kill-check: a stopped container's kill "succeeds"
        raise Error('container "%s" is not running' % cid)
    if "kill" in disabled or "kill" in (c.data.get("disabled") or []):
        return  # switch "kill": a runtime that loses signals
    pids = [c.pid]
    if all_processes:
        pids = cgroups.pids(c.data["cgroups"]["leaves"]) or pids
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def delete(root: str, cid: str, force: bool = False, disabled: Switches = frozenset()) -> None:
    """Remove a stopped container (``--force``: kill it first).

    A created container is not stopped either: runtime.md (delete) says
    deleting a container that is not stopped MUST generate an error, so it
    needs --force too.  (runc and crun kill and delete a created one.)
    Switch ``delete-check``: they are all deleted.
    """
    try:
        c = Container.load(root, cid)
    except Error:
        if force:
            _remove_remnant(root, cid)
            return
        raise
    status = c.status()
    lax = "delete-check" in set(disabled) | set(c.data.get("disabled") or [])
    if status != "stopped" and not force and not lax:
        raise Error('cannot delete container "%s" that is not stopped (state %s); '
                    'use --force' % (cid, status))
    if status != "stopped":
        _kill_and_wait(c)
    try:
        config = _config(c)
    except (OSError, ValueError, Error):  # Error: switch reread-config met a broken config.json
        config = {}
    _destroy(c, config, run_hooks=True)


def _remove_remnant(root: str, cid: str) -> None:
    """delete --force of a directory a killed ``create`` left without state.json."""
    d = Container(root, cid).dir
    if os.path.isdir(d):
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


def _config(c: Container, disabled: Switches = frozenset()) -> Config:
    """The container's config as create saw it (its hooks as the switches make them).

    Switch ``reread-config``: the bundle's config.json as it is now, validated again.
    """
    disabled = set(disabled) | set(c.data.get("disabled") or [])
    if "reread-config" in disabled:
        config = spec.load(c.data.get("bundle") or ".", disabled)[0]
    else:
        config = c.config()
    _switch_hooks(config, disabled)
    return config


#: startContainer hooks the runtime itself runs at ``start`` (switch ``hook-namespace`` puts them there)
HOST_START_CONTAINER = "startContainer on the host"


def _switch_hooks(config: Config, disabled: Switches | list[str]) -> None:
    """The hooks as the switches make them.

    ``hooks``: none runs; ``hook-env``: a hook without env gets an empty one;
    ``hook-order``: each kind's list reversed; ``hook-timeout``: no timeout;
    ``hook-args``: argv[0] is the path and the runtime's environment comes
    first; ``hook-namespace``: createContainer hooks run after createRuntime's,
    by the runtime, and startContainer hooks at ``start``, by the runtime too.
    """
    if "hooks" in disabled:
        config.pop("hooks", None)
    hooks = config.get("hooks") or {}
    for hs in hooks.values():
        for h in hs:
            if "hook-env" in disabled:
                h.setdefault("env", [])
            if "hook-timeout" in disabled:
                h.pop("timeout", None)
            if "hook-args" in disabled:
                h["args"] = [h["path"]] + list(h.get("args") or [h["path"]])[1:]
                h["env"] = ["%s=%s" % kv for kv in os.environ.items()] + list(h.get("env") or [])
        if "hook-order" in disabled:
            hs.reverse()
    if "hook-namespace" in disabled:
        hooks["createRuntime"] = list(hooks.get("createRuntime") or []) + list(hooks.pop("createContainer", []))
        hooks[HOST_START_CONTAINER] = hooks.pop("startContainer", [])


def _thaw(c: Container) -> None:
    """A frozen task dies of SIGKILL only once thawed (v1), and its cgroup cannot go before."""
    from .freeze import thaw_quietly
    thaw_quietly(c.data.get("cgroups"))


def _left_frozen(c: Container) -> bool:
    """Switch ``thaw``: a paused container's processes are neither thawed nor killed, the bug
    runtime-ref had on cgroup v1 (there SIGKILL waits for a thaw that never came), played on
    v2 as well (where SIGKILL would reach a frozen task)."""
    if "thaw" not in (c.data.get("disabled") or []):
        return False
    from .freeze import frozen
    return frozen(c.data.get("cgroups"), partly=True)


def _kill_and_wait(c: Container, timeout: float = 5.0) -> None:
    if _left_frozen(c):
        return
    try:
        os.kill(c.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _thaw(c)  # after the kill: nothing the container does between thaw and death can matter
    deadline = time.monotonic() + timeout
    while c.alive() and time.monotonic() < deadline:
        time.sleep(0.002)


def _destroy(c: Container, config: Config, run_hooks: bool) -> None:
    """Undo everything create did: processes, mounts, cgroups, state."""
    from . import rootfs
    cg = c.data.get("cgroups")
    if not cg and c.data.get("cgroups_path"):  # create was stopped while making them
        cg = cgroups.find(c.data["cgroups_path"])
    if cg and not _left_frozen(c):
        # without a pid namespace, killing the init does not kill the rest
        thawed = False
        for _ in range(100):
            left = cgroups.pids(cg["leaves"])
            if not left:
                break  # (an empty cgroup needs no thaw to go: the usual case, and the cheap one)
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not thawed:
                _thaw(c)  # after the kill, as in _kill_and_wait
                thawed = True
            time.sleep(0.005)
    errors = []
    if c.data.get("host_mounts") and c.data.get("rootfs"):
        rootfs.umount_under(c.data["rootfs"])
    if cg and "cgroup-cleanup" not in (c.data.get("disabled") or []):
        try:
            cgroups.remove_children(cg["leaves"])
            cgroups.remove(cg["created"])
            if c.data.get("cgroups_path") == DEFAULT_CGROUP_PARENT + "/" + c.id:
                cgroups.remove_shared_parents(cg["leaves"])  # made by another container, maybe
        except Error as e:
            errors.append(str(e))
    if run_hooks and (config.get("hooks") or {}).get("poststop"):
        from . import hooks
        st = c.oci_state()
        st["status"] = "stopped"
        disabled = c.data.get("disabled") or []
        try:
            hooks.run(config, "poststop", st, fatal="poststop-warning" in disabled, disabled=disabled)
        except Error as e:
            errors.append(str(e))  # switch poststop-warning: the first failure ends delete, after the rest
    for name in ("exec.fifo", "config.json", "state.json", ".state.json.tmp"):
        try:
            os.unlink(os.path.join(c.dir, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(c.dir)
    except OSError as e:
        errors.append("cannot remove %s: %s" % (c.dir, e.strerror))
    if errors:
        raise Error("; ".join(errors))
