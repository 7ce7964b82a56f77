"""The lifecycle verbs, runtime side: create, start, run, kill, delete, exec.

``create`` is the heart: it validates everything it can *before* a process
exists (so most errors cost little to clean up), makes the state directory
and exec.fifo, builds the cgroups, clones the init into its namespaces,
writes its uid/gid maps and cgroup membership, and waits until the init says
it is ready, i.e. blocked on exec.fifo.  Then it records the state and exits;
no runtime process stays behind.  ``start`` opens the fifo's read end, which
lets the init exec the container's process.
"""
import os
import _signal as signal  # the C module: `signal` imports enum (~3 ms)
import time

from . import cgroups, spec
from .errors import Error
from .state import Container, OCI_VERSION, starttime


def _prepare(config, disabled, nss):
    """Every check that does not need a process; returns the seccomp program."""
    from . import rootfs, security
    proc = config["process"]
    security.check(proc)
    rootfs.check_sysctl((config.get("linux") or {}).get("sysctl"), nss)
    for m in config.get("mounts") or []:
        if not (m.get("destination") or "").startswith("/"):
            raise Error("mounts: destination %r must be absolute" % m.get("destination"))
        rootfs.parse_options(m.get("options"))
    sc = (config.get("linux") or {}).get("seccomp")
    if sc and "seccomp" not in disabled:
        from . import seccomp
        return seccomp.compile(sc)
    return None


def create(root, cid, bundle, disabled, pid_file=None, fifo=True, args=None):
    """Build the container up to its blocked init; returns the Container.

    With ``fifo=False`` (``run``) the init does not wait for ``start``.
    """
    bundle = os.path.abspath(bundle or ".")
    config, raw = spec.load(bundle)
    if "hooks" in disabled:
        config.pop("hooks", None)
    nss = spec.namespaces(config, disabled)
    c = Container(root, cid)
    os.makedirs(root, 0o700, exist_ok=True)
    try:
        os.mkdir(c.dir, 0o711)
    except FileExistsError:
        raise Error('container "%s" already exists' % cid) from None
    pid = 0
    cg = None
    mntns = "mount" in nss
    rootfs_path = os.path.realpath(os.path.join(bundle, config["root"]["path"]))
    try:
        with open(os.path.join(c.dir, "config.json"), "wb") as f:
            f.write(raw)
        if fifo:
            os.mkfifo(c.fifo, 0o622)
            os.chmod(c.fifo, 0o622)  # writable by the container's root even when it is not ours
        linux = config.get("linux") or {}
        cgpath = linux.get("cgroupsPath") or "/runtime-ref/" + cid
        c.data = {"ociVersion": OCI_VERSION, "id": cid, "pid": 0, "bundle": bundle,
                  "rootfs": rootfs_path, "annotations": config.get("annotations") or {},
                  "cgroups_path": cgpath, "disabled": sorted(disabled), "host_mounts": not mntns,
                  "namespaces": sorted(nss), "created": time.time()}
        c.save()  # before anything is made on the host: a killed create can still be deleted
        # Joining a cgroup waits for an RCU grace period (5-12 ms here): create
        # starts that wait early (warm_up), and we do our Python work meanwhile.
        # (Not with a time namespace: joining one needs a single-threaded runtime.)
        cg = c.data["cgroups"] = cgroups.create(cgpath, linux.get("resources") or {}, disabled,
                                                linux.get("devices") or [], warm_up="time" not in nss)
        c.save()
        prog = _prepare(config, disabled, nss)
        pid = _spawn(c, config, bundle, disabled, nss, prog, cg, fifo, args)
        c.data["pid"] = pid
        c.data["starttime"] = starttime(pid)
        c.save()
        if pid_file:
            tmp = pid_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(pid))
            os.rename(tmp, pid_file)
        c.cfg = config
    except BaseException:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        _destroy(c, config, run_hooks=False)
        raise
    return c


LEAKY_FD = 7  # where the cwd-check control leaves the state directory's descriptor


_reserved_leaky_fd = False


def reserve_leaky_fd():
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


def _spawn(c, config, bundle, disabled, nss, prog, cg, fifo, args):
    """Clone the init and walk it through the handshake described in init.py."""
    from . import linux as L, namespaces
    hooks = config.get("hooks") or {}
    hook_state = {"ociVersion": OCI_VERSION, "id": c.id, "status": "creating", "pid": 0,
                  "bundle": bundle, "annotations": config.get("annotations") or {}}
    join_fds = namespaces.open_joins(nss)
    from_parent, to_init = os.pipe()
    from_init, to_parent = os.pipe()
    fifo_dir = os.open(c.dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if fifo else None
    if fifo_dir is not None and "cwd-check" in disabled and _reserved_leaky_fd:
        # The negative control of CVE-2024-21626 plays runc < 1.1.12, whose leaked host
        # directory fd had a stable number: put ours at that number, so the control
        # does not depend on which descriptors this process happens to hold.
        os.dup2(fifo_dir, LEAKY_FD, inheritable=False)
        os.close(fifo_dir)
        fifo_dir = LEAKY_FD
    ctx = {"config": config, "bundle": bundle, "disabled": disabled, "nss": nss,
           "seccomp": prog, "cgroups": cg, "cgroups_path": (config.get("linux") or {}).get("cgroupsPath"),
           "mntns": "mount" in nss, "userns": "user" in nss, "cgroupns": "cgroup" in nss,
           "join_fds": {t: fd for t, fd in join_fds.items() if t not in ("pid", "time")},
           "from_parent": from_parent, "to_parent": to_parent, "fifo_dir": fifo_dir,
           "hooks_before_pivot": bool(hooks.get("prestart") or hooks.get("createRuntime")
                                      or hooks.get("createContainer")),
           "hook_state": hook_state, "args": args}
    # Everything the init will need is imported now: once in a user namespace
    # it may not be allowed to read Python's own files (e.g. under /root).
    from . import init
    import fcntl  # noqa: F401  (init: loopback_up)
    if any(hooks.values()):
        import subprocess  # noqa: F401
        from . import hooks as _hooks, jsonfast  # noqa: F401
    restore = namespaces.before_clone(nss, join_fds, config)
    try:
        pid = L.clone(namespaces.clone_flags(nss))
        if pid == 0:
            os.close(to_init)
            os.close(from_init)
            init.main(ctx)  # never returns
    finally:
        if pid != 0:
            namespaces.after_clone(restore)
    os.close(from_parent)
    os.close(to_parent)
    for fd in join_fds.values():
        os.close(fd)
    if fifo_dir is not None:
        os.close(fifo_dir)
    hook_state["pid"] = pid
    try:
        # Joining a cgroup waits for an RCU grace period (~12 ms): a thread
        # does it while we write the maps and limits and the init its mounts.
        joined = _Background(cgroups.add, cg["leaves"], pid)
        try:
            if nss.get("user", 1) is None:
                namespaces.write_id_maps(pid, config)
                os.write(to_init, b"M")
            linux = config.get("linux") or {}
            cgroups.set_limits(cg, linux.get("resources") or {}, disabled, linux.get("devices") or [])
            joined.result()
            os.write(to_init, b"C")
        except BrokenPipeError:
            pass  # the init failed early: its message is waiting below
        finally:
            joined.result(raise_error=False)
        while True:
            msg = os.read(from_init, 65536)
            if msg == b"H":
                from . import hooks as H
                H.run(config, "prestart", hook_state)
                H.run(config, "createRuntime", hook_state)
                os.write(to_init, b"G")
            elif msg == b"R":
                return pid
            elif msg.startswith(b"E"):
                raise Error(msg[1:].decode(errors="replace"))
            else:
                raise Error("container init exited before it was ready")
    except BaseException:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(to_init)
        os.close(from_init)


class _Background:
    """Run one call in a thread (``_thread``: ``threading`` costs ms to import)."""

    def __init__(self, fn, *args):
        import _thread
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._error = None
        _thread.start_new_thread(self._run, (fn, args))

    def _run(self, fn, args):
        try:
            fn(*args)
        except BaseException as e:
            self._error = e
        finally:
            self._lock.release()

    def result(self, raise_error=True):
        if self._lock.acquire():
            self._lock.release()
        if raise_error and self._error is not None:
            raise self._error


def start(root, cid):
    c = Container.load(root, cid)
    status = c.status()
    if status != "created":
        raise Error("cannot start a container in state %s" % status)
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
    config = _config(c)
    if (config.get("hooks") or {}).get("poststart"):
        from . import hooks
        hooks.run(config, "poststart", c.oci_state(), fatal=False)
    return c


def kill(root, cid, sig, all_processes=False, disabled=()):
    c = Container.load(root, cid)
    if not c.alive():
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


def delete(root, cid, force=False):
    try:
        c = Container.load(root, cid)
    except Error:
        if force:
            _remove_remnant(root, cid)
            return
        raise
    status = c.status()
    if status == "running" and not force:
        raise Error('cannot delete container "%s" that is not stopped (state running); '
                    'use --force' % cid)
    if status != "stopped":
        _kill_and_wait(c)
    try:
        config = _config(c)
    except (OSError, ValueError):
        config = {}
    _destroy(c, config, run_hooks=True)


def _remove_remnant(root, cid):
    """delete --force of a directory a killed ``create`` left without state.json."""
    d = Container(root, cid).dir
    if os.path.isdir(d):
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


def _config(c):
    """The container's config as create saw it (without hooks under switch ``hooks``)."""
    config = c.config()
    if "hooks" in (c.data.get("disabled") or []):
        config.pop("hooks", None)
    return config


def _kill_and_wait(c, timeout=5.0):
    try:
        os.kill(c.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while c.alive() and time.monotonic() < deadline:
        time.sleep(0.002)


def _destroy(c, config, run_hooks):
    """Undo everything create did: processes, mounts, cgroups, state."""
    from . import rootfs
    cg = c.data.get("cgroups")
    if not cg and c.data.get("cgroups_path"):
        cg = cgroups.find(c.data["cgroups_path"])  # create was stopped while making them
    if cg:
        # without a pid namespace, killing the init does not kill the rest
        for _ in range(100):
            left = cgroups.pids(cg["leaves"])
            if not left:
                break
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.005)
    errors = []
    if c.data.get("host_mounts") and c.data.get("rootfs"):
        rootfs.umount_under(c.data["rootfs"])
    if cg:
        try:
            cgroups.remove(cg["created"])
        except Error as e:
            errors.append(str(e))
    if run_hooks and (config.get("hooks") or {}).get("poststop"):
        from . import hooks
        st = c.oci_state()
        st["status"] = "stopped"
        hooks.run(config, "poststop", st, fatal=False)
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


_FORWARD = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")


def run(root, cid, bundle, disabled, pid_file=None, detach=False):
    """create + start in one go, then wait, clean up, and return the exit code."""
    if detach:
        create(root, cid, bundle, disabled, pid_file, fifo="exec-fifo" not in disabled)
        if "exec-fifo" not in disabled:
            start(root, cid)
        return 0
    c = create(root, cid, bundle, disabled, pid_file, fifo=False)
    pid = c.pid
    config = c.cfg
    try:
        for name in _FORWARD:
            signal.signal(getattr(signal, name), lambda s, f: os.kill(pid, s))
        if (config.get("hooks") or {}).get("poststart"):
            from . import hooks as H
            H.run(config, "poststart", c.oci_state(), fatal=False)
        return _wait_status(pid)
    finally:
        for name in _FORWARD:
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        _destroy(c, config, run_hooks=True)


def exec_(root, cid, args, disabled_extra, opts):
    """Run another process in a running container: join its namespaces,
    its cgroups, and apply the same process settings as the init."""
    from . import linux as L, namespaces, security
    c = Container.load(root, cid)
    if c.status() != "running":
        raise Error("cannot exec in a container in state %s" % c.status())
    config = c.config()
    disabled = set(c.data.get("disabled") or []) | disabled_extra
    proc = dict(config["process"])
    if opts.get("process"):
        from .jsonfast import loads
        with open(opts["process"], "rb") as f:
            proc = loads(f.read())
    if args:
        proc["args"] = args
    if not proc.get("args"):
        raise Error("exec: no command given")
    if opts.get("env"):
        proc["env"] = list(proc.get("env") or []) + opts["env"]
    if opts.get("cwd"):
        proc["cwd"] = opts["cwd"]
    if opts.get("user"):
        u, _, g = opts["user"].partition(":")
        proc["user"] = dict(proc.get("user") or {}, uid=int(u), gid=int(g or 0))
    if proc.get("terminal"):
        raise Error("exec: a terminal is not supported by runtime-ref (use no -t)")
    security.check(proc)
    sc = (config.get("linux") or {}).get("seccomp")
    prog = None
    if sc and "seccomp" not in disabled:
        from . import seccomp
        prog = seccomp.compile(sc)
    pid = c.pid
    nstypes = []
    for t in ("user", "ipc", "uts", "network", "cgroup", "pid", "time", "mount"):
        name = namespaces.PROC_NAME[t]
        if os.readlink("/proc/%d/ns/%s" % (pid, name)) != os.readlink("/proc/self/ns/%s" % name):
            nstypes.append(t)
    fds = {t: os.open("/proc/%d/ns/%s" % (pid, namespaces.PROC_NAME[t]), os.O_RDONLY | os.O_CLOEXEC)
           for t in nstypes}
    rootfd = os.open("/proc/%d/root" % pid, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    # pid and time namespaces apply to children: join them here, then fork
    for t in ("pid", "time"):
        if t in fds:
            L.setns(fds[t], namespaces.CLONE_FLAG[t])
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        try:
            _exec_child(c, proc, disabled, prog, fds, rootfd)
        except BaseException as e:
            os.write(w, str(e).encode(errors="replace"))
        os._exit(127)
    os.close(w)
    err = os.read(r, 65536)
    os.close(r)
    if err:
        os.waitpid(child, 0)
        raise Error(err.decode(errors="replace"))
    if opts.get("pid_file"):
        with open(opts["pid_file"], "w") as f:
            f.write(str(child))
    if opts.get("detach"):
        return 0
    for name in _FORWARD:
        signal.signal(getattr(signal, name), lambda s, f: os.kill(child, s))
    return _wait_status(child)


def _wait_status(pid):
    """Wait for a child; its exit status, or 128+N when a signal N killed it (the shell's convention)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _exec_child(c, proc, disabled, prog, fds, rootfd):
    from . import linux as L, namespaces, security
    # cgroups first: /sys/fs/cgroup is only visible from the host mount namespace
    cgroups.add(c.data["cgroups"]["leaves"], 0)
    for t in namespaces.JOIN_ORDER:
        if t in fds:
            L.setns(fds[t], namespaces.CLONE_FLAG[t])
    if "user" in fds:
        L.setresgid(0)
        L.setresuid(0)
    # the container's root (pivot_root'ed or chroot'ed): enter it explicitly
    os.fchdir(rootfd)
    os.chroot(".")
    if "rlimits" not in disabled:
        security.set_rlimits(proc.get("rlimits"))
    env = security.environment(proc, disabled)
    path = security.lookup(proc["args"][0], env)
    nnp = proc.get("noNewPrivileges") and "nnp" not in disabled
    if nnp:
        security.no_new_privs()
    if prog and not nnp:
        L.seccomp_load(*prog)
    security.finalize(proc, disabled)
    umask = None if "umask" in disabled else (proc.get("user") or {}).get("umask")
    os.umask(0o022 if umask is None else umask)
    cwd = "/" if "cwd" in disabled else (proc.get("cwd") or "/")
    os.chdir(cwd)
    if "cwd-check" not in disabled:
        security.check_cwd(cwd)
    if prog and nnp:
        L.seccomp_load(*prog)
    os.execve(path, proc["args"], env)
