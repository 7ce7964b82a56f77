"""The ``exec`` verb: another process in a running container.

runtime-ref's ``setns_init_linux.go``.  The runtime opens the init's
namespaces and root, joins its pid and time namespaces (they apply to
children only) and forks; the child joins the container's cgroups (while
``/sys/fs/cgroup`` is still the host's), setns into the other namespaces,
chroots into the init's root, and from there is made exactly like the init's
process, by the same ``process.finish``.
"""
from __future__ import annotations

import os

from . import attributes, cgroups, lsm, namespaces, process, security, spec
from . import linux as L
from .container import FORWARD, wait_status
from .errors import Error
from .state import Container

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from typing import NoReturn

    from .hints import Config, ExecOptions, Process, Progress, SeccompProgram, Switches
else:
    import _signal as signal  # the C module: `signal` imports enum (~3 ms)

#: the init's namespaces an exec'd process joins when they are not the runtime's own
_NAMESPACES = ("user", "ipc", "uts", "network", "cgroup", "pid", "time", "mount")


def exec_process(root: str, cid: str, args: list[str], opts: ExecOptions) -> int:
    """Run ``args`` (or the ``--process`` file) in container ``cid``; returns its exit
    status, or 0 at once with ``--detach``."""
    c = Container.load(root, cid)
    status = c.status()
    if status == "paused" and not opts["ignore_paused"]:
        raise Error("cannot exec in a paused container (use --ignore-paused)")
    if status not in ("running", "paused"):
        raise Error("cannot exec in a container in state %s" % status)
    config = c.config()
    disabled = set(c.data.get("disabled") or [])
    if "exec-confine" in disabled:  # the control: the exec'd process keeps the runtime's privileges
        disabled |= {"caps", "nnp", "seccomp", "apparmor", "selinux"}
    proc = _process(config, args, opts, disabled)
    security.check(proc, spec.version_at_least(config, (1, 1)), disabled)
    attributes.check(config, proc, disabled)
    lsm.check(config, proc, disabled)
    prog = _seccomp(config, disabled)
    fds = {} if "exec-namespaces" in disabled else _namespaces_to_join(c.pid)
    rootfd = os.open("/proc/%d/root" % c.pid, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    userns = "user" in fds
    if userns and cgroups.rootless():
        # Rootless: joining the others needs CAP_SYS_ADMIN over them, which only their owner,
        # the container's user namespace, gives an unprivileged user: join it first, here.
        L.setns(fds.pop("user"), namespaces.CLONE_FLAG["user"])
    # pid and time namespaces apply to children: join them here, then fork
    for t in ("pid", "time"):
        if t in fds:
            L.setns(fds[t], namespaces.CLONE_FLAG[t])
    # Not dumpable, as runc's init is (CVE-2019-5736): the child is in the container's PID
    # namespace from the fork, and until it execs (which makes it dumpable again) its
    # /proc/<pid>/exe is this runtime's interpreter on the host — once it has dropped to the
    # container's capabilities, a container process could otherwise open it.
    L.prctl(L.PR_SET_DUMPABLE, 0)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        progress: Progress = {"step": "join"}
        try:
            _child(c, proc, config.get("linux") or {}, disabled, prog, fds, rootfd, opts["pass_fds"], progress, userns)
        except BaseException as e:  # the message names the step, as the init's do
            msg = str(e) if isinstance(e, Error) else "exec (%s): %s" % (progress.get("step"), e)
            os.write(w, msg.encode(errors="replace"))
        os._exit(127)
    os.close(w)
    err = os.read(r, 65536)
    os.close(r)
    if err:
        os.waitpid(child, 0)
        raise Error(err.decode(errors="replace"))
    if opts["pid_file"]:
        with open(opts["pid_file"], "w") as f:
            f.write(str(child))
    if opts["detach"]:
        return 0
    for name in FORWARD:
        signal.signal(getattr(signal, name), lambda s, f: os.kill(child, s))
    return wait_status(child)


def _process(config: Config, args: list[str], opts: ExecOptions, disabled: Switches) -> Process:
    """The container's process settings with exec's own overrides on top (switch ``exec-opts``:
    none of them)."""
    if "exec-opts" in disabled:
        opts = dict(opts, env=None, cwd=None, user=None, cap=None, additional_gids=None,  # type: ignore[assignment]
                    no_new_privs=False, process=None, apparmor=None, process_label=None)
    proc = dict(config["process"])
    if "exec-terminal" not in disabled:  # the switch: the init's terminal: true is taken over (refused below)
        proc["terminal"] = False  # as runc: an exec'd process has a terminal only with -t, never the init's
        proc.pop("consoleSize", None)
    if opts["process"]:
        from .jsonfast import loads
        with open(opts["process"], "rb") as f:
            proc = loads(f.read())
    if args:
        proc["args"] = args
    if not proc.get("args"):
        raise Error("exec: no command given")
    if opts["env"]:
        proc["env"] = list(proc.get("env") or []) + opts["env"]
    if opts["cwd"]:
        proc["cwd"] = opts["cwd"]
    if opts["user"]:
        u, _, g = opts["user"].partition(":")
        if not u.isdigit() or not (g or "0").isdigit():
            raise Error("exec --user %s: give numeric UID[:GID]" % opts["user"])
        proc["user"] = dict(proc.get("user") or {}, uid=int(u), gid=int(g or 0))
    if opts["additional_gids"]:
        proc["user"] = dict(proc.get("user") or {}, additionalGids=opts["additional_gids"])
    if opts["no_new_privs"]:
        proc["noNewPrivileges"] = True
    if opts["cap"]:
        proc["capabilities"] = _add_caps(proc.get("capabilities") or {}, opts["cap"])
    if opts["apparmor"]:
        proc["apparmorProfile"] = opts["apparmor"]
    if opts["process_label"]:
        proc["selinuxLabel"] = opts["process_label"]
    if proc.get("terminal"):
        raise Error("exec: a terminal is not supported by runtime-ref (use no -t)")
    return proc


def _add_caps(caps: dict[str, list[str]], added: list[str]) -> dict[str, list[str]]:
    """``--cap``, as runc's: each one added to the bounding, effective and permitted sets, and to the
    ambient set only where the inheritable set is not empty (never to the inheritable set itself:
    CVE-2022-29162)."""
    out = {kind: list(names or []) for kind, names in caps.items()}
    for cap in added:
        for kind in ("bounding", "effective", "permitted") + (("ambient",) if out.get("inheritable") else ()):
            if cap not in out.setdefault(kind, []):
                out[kind].append(cap)
    return out


def _seccomp(config: Config, disabled: Switches) -> SeccompProgram | None:
    sc = (config.get("linux") or {}).get("seccomp")
    if sc and "seccomp" not in disabled:
        from . import seccomp
        return seccomp.compile(sc, ignore_args="seccomp-args" in disabled)
    return None


def _namespaces_to_join(pid: int) -> dict[str, int]:
    """{type: fd} of every namespace of the init that is not already ours."""
    fds = {}
    for t in _NAMESPACES:
        name = namespaces.PROC_NAME[t]
        theirs = "/proc/%d/ns/%s" % (pid, name)
        if os.readlink(theirs) != os.readlink("/proc/self/ns/%s" % name):
            fds[t] = os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)
    return fds


def _child(c: Container, proc: Process, linux: Config, disabled: Switches, prog: SeccompProgram | None,
           fds: dict[str, int], rootfd: int, pass_fds: int, progress: Progress, userns: bool) -> NoReturn:
    """In the forked child: into the container, then the same last steps as the init
    (``userns``: the container has a user namespace, joined here or, rootless, by the parent)."""
    affinity = (proc.get("execCPUAffinity") or {}) if "cpu-affinity" not in disabled else {}
    # process.execCPUAffinity: "initial" before the move into the container's cgroup (the
    # cpuset there may not hold our CPUs), "final" once in it
    attributes.set_affinity(affinity.get("initial"), "process.execCPUAffinity.initial")
    # cgroups first: /sys/fs/cgroup is only visible from the host mount namespace
    if "exec-cgroup" not in disabled:
        cgroups.enter(c.data["cgroups"])
    attributes.set_affinity(affinity.get("final"), "process.execCPUAffinity.final")
    namespaces.join(fds)
    if userns:
        L.setresgid(0)
        L.setresuid(0)
    # the container's root (pivot_root'ed or chroot'ed): enter it explicitly
    os.fchdir(rootfd)
    os.chroot(".")
    progress["step"] = "cwd"
    # a missing cwd is made as the init makes one (by the container's root, before the user changes)
    os.makedirs(process.process_cwd(proc, disabled), 0o755, exist_ok=True)
    process.finish(proc, disabled, prog, progress, pass_fds=pass_fds, linux=linux)
