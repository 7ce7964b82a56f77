"""The ``exec`` step: a process started in the running container through the runtime's ``exec``.

What it checks: the exec'd process's exit status (0 unless ``exit`` says
otherwise, or any failure with ``fails``) and its output; what it hands the
runtime: ``exec``'s own flags (``user``, ``env``, ``cwd``, ``cap``,
``additional_gids``, ``no_new_privs``, ``detach``, a ``process`` file).

``like_init`` compares the exec'd process with the container's init from the
host, while both live, group by group (runc's setns_init: an exec'd process
is confined like the first one): ``namespaces`` (every /proc/<pid>/ns link), ``cgroup``
(/proc/<pid>/cgroup), ``credentials`` (the ids, every capability set,
NoNewPrivs and the seccomp mode of /proc/<pid>/status), ``lsm`` (the LSM
label, /proc/<pid>/attr/current).  The harness learns the exec'd process's
pid from ``exec --pid-file``, holds its stdin open (the command should read
it, e.g. ``read _``) until the comparison is done, and waits until the
process runs the init's executable (the runtime's own pre-exec code has
other credentials and namespaces of its own for a while).

For a sandboxed runtime the pids are the sandbox's, not the container's:
the comparison is shown and not judged (``StepResult.sandbox``).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from conformance.model.matchers import text_failures
from conformance.model.placeholders import fill
from conformance.model.records import StepResult
from conformance.model.scenario import TextExpectation

from . import proctable
from .drivers.procs import empty_stdin, reap_adopted
from .lifecycle import Container, exe_link

#: how long the exec'd process may take to appear (pid file) and to exec the command
APPEAR_S = 10.0

#: the status lines that say what the process may do
CREDENTIAL_FIELDS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs",
                     "Seccomp")
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "pid_for_children", "time", "time_for_children", "user", "uts")
LIKE_INIT = ("namespaces", "cgroup", "credentials", "lsm")


def flags(arg: dict[str, Any], variables: dict[str, str], workdir: Path) -> list[str]:
    """exec's own flags, as runc spells them (each given once per value)."""
    out: list[str] = []
    if "user" in arg:
        out += ["--user", str(arg["user"])]
    for pair in arg.get("env", ()):
        out += ["--env", fill(str(pair), variables)]
    if "cwd" in arg:
        out += ["--cwd", str(arg["cwd"])]
    for cap in arg.get("cap", ()):
        out += ["--cap", str(cap)]
    for gid in arg.get("additional_gids", ()):
        out += ["--additional-gids", str(gid)]
    if arg.get("no_new_privs"):
        out.append("--no-new-privs")
    if arg.get("detach"):
        out.append("--detach")
    if "process" in arg:
        path = workdir / f"exec-process-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(fill(arg["process"], variables)))
        out += ["--process", str(path)]
    return out


def run(container: Container, arg: dict[str, Any], variables: dict[str, str], workdir: Path) -> StepResult:
    """One exec, judged on its exit and stdout; with ``like_init``, compared with the init from the host."""
    run_arg = fill(arg["run"], variables) if "run" in arg else None
    argv = [] if run_arg is None else ["sh", "-c", run_arg] if isinstance(run_arg, str) else [str(a) for a in run_arg]
    given = flags(arg, variables, workdir)
    if arg.get("like_init"):
        return _like_init(container, given, argv, list(arg["like_init"]), workdir)
    stdin = empty_stdin()
    try:
        done = subprocess.run(container.driver.exec_argv(container.cid, given) + argv, stdin=stdin,
                              capture_output=True, text=True, timeout=container.timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        return StepResult("exec", False, f"exec: no answer in {container.timeout:g}s")
    finally:
        os.close(stdin)
        _reap_orphans(container)
    misses = _exit_misses(arg, done.returncode)
    if "stdout" in arg:
        misses += text_failures(TextExpectation.from_yaml(arg["stdout"]), done.stdout, variables)
    if "stderr" in arg:
        misses += text_failures(TextExpectation.from_yaml(arg["stderr"]), done.stderr, variables)
    said = f"; stderr {done.stderr.strip()[-150:]!r}" if done.stderr.strip() else ""
    return StepResult("exec", not misses, f"exec{_shown(given)}: {'; '.join(misses) or 'as expected'}; "
                      f"exit {done.returncode}, stdout {done.stdout.strip()[:150]!r}{said}")


def _reap_orphans(container: Container) -> None:
    """Reap what an exec left to us, the subreaper (crun 1.8 leaves the child of a failed exec): a
    zombie in the container's PID namespace would hold its init's exit until someone reaps it, as
    a shim reaps every child.  Never the init itself: its status is the scenario's."""
    reap_adopted(exclude=container.pid if container.pid is not None else -1)


def _runtime_exe(container: Container) -> str:
    """The runtime's own init executable (/proc/<pid>/exe before the entrypoint's exec), "" if unknown."""
    probe = getattr(container.driver, "sandbox", None)  # a driver before its probe (or a stand-in) has none
    return probe.init_exe if probe is not None else ""


def _exit_misses(arg: dict[str, Any], returncode: int) -> list[str]:
    if arg.get("fails"):
        return [] if returncode != 0 else ["expected exec to fail, it exited 0"]
    want = int(arg.get("exit", 0))
    return [] if returncode == want else [f"exit: expected {want}, observed {returncode}"]


def _shown(given: list[str]) -> str:
    return f" {' '.join(given)}" if given else ""


def _like_init(container: Container, given: list[str], argv: list[str], groups: list[str],
               workdir: Path) -> StepResult:
    """Start the exec'd process, compare it with the init while it waits on its stdin, then let it end."""
    name = f"exec like the init ({', '.join(groups)})"
    pid_file = workdir / f"exec-{time.monotonic_ns()}.pid"
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(container.driver.exec_argv(container.cid, ["--pid-file", str(pid_file), *given])
                                + (argv or ["sh", "-c", "read _"]), stdin=read_end, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    finally:
        os.close(read_end)
    seen: list[str] = []
    try:
        pid = _appeared(pid_file, container.pid, proc, max(APPEAR_S, container.timeout), seen, _runtime_exe(container))
        differences = _compare(container.pid, pid, groups) if pid else None
    finally:
        os.close(write_end)  # the exec'd process reads EOF and ends
        try:
            _out, err = proc.communicate(timeout=container.timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
        _reap_orphans(container)
    if pid is None:
        return StepResult(name, False, f"{name}: the exec'd process was not seen running (exec exit "
                          f"{proc.returncode}, stderr {err.strip()[-200:]!r}; {'; '.join(seen) or 'no pid file'})")
    sandbox = container.driver.sandboxed
    detail = f"{name}: exec'd pid {pid}, init pid {container.pid}: " + (
        "; ".join(differences) if differences else "the same")
    if sandbox:
        return StepResult(name, False, f"{detail} (pids of the sandbox, not the container's: {sandbox})",
                          sandbox=f"compares the sandbox's processes, not the container's ({sandbox})")
    return StepResult(name, not differences, detail)


def _appeared(pid_file: Path, init_pid: int | None, proc: subprocess.Popen[str], timeout: float,
              seen: list[str], runtime_exe: str = "") -> int | None:
    """The exec'd pid, once it runs the init's executable (the runtime's own code is gone); None if
    the exec ended or never got there (``seen`` then says what was read last).

    The init's executable is read again at each look: ``start`` may return before the init has
    exec'd the entrypoint (runc's start only opens the exec fifo), and an executable read that
    early is the runtime's own, which the exec'd process never runs once it got there.  A match on
    ``runtime_exe`` (the runtime's init, as its sandbox probe saw it) is both still in the
    runtime's code, not a match.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        want = proctable.exe_id(init_pid) if init_pid else None
        text = pid_file.read_text().strip() if pid_file.exists() else ""
        pid = int(text) if text.isdigit() else None
        exe = proctable.exe_id(pid) if pid is not None else None
        if pid is not None and exe is not None and exe == want and exe_link(pid) != runtime_exe:
            return pid
        seen[:] = [f"pid file {text!r}, its exe {exe}, the init's {want}"]
        time.sleep(0.005)
    return None


def _compare(init: int | None, other: int, groups: list[str]) -> list[str]:
    """One line per attribute that differs: ``what: init X, exec Y``."""
    assert init is not None
    diffs: list[str] = []
    for group in groups:
        mine, theirs = _read(group, init), _read(group, other)
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                diffs.append(f"{key}: init {mine.get(key, '(none)')!r}, exec {theirs.get(key, '(none)')!r}")
    return diffs


def _read(group: str, pid: int) -> dict[str, str]:
    """The attributes of one group, by name (a value that cannot be read says why)."""
    base = Path(f"/proc/{pid}")
    if group == "namespaces":
        return {f"ns/{n}": _readlink(base / "ns" / n) for n in NAMESPACES if (base / "ns" / n).exists()}
    if group == "cgroup":
        return {"cgroup": _text(base / "cgroup")}
    if group == "credentials":
        lines = dict(line.split(":", 1) for line in _text(base / "status").splitlines() if ":" in line)
        return {f"status {k}": " ".join(lines.get(k, "(none)").split()) for k in CREDENTIAL_FIELDS}
    if group == "lsm":
        return {"attr/current": _text(base / "attr" / "current").strip("\0\n ")}
    raise ValueError(f"like_init: unknown group {group!r} (one of {', '.join(LIKE_INIT)})")


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
