"""pytest-testinfra inside a running container: commands travel through the runtime's ``exec``.

``RuntimeExecBackend`` is one more testinfra backend, the size of testinfra's
own podman backend: where podman runs ``podman exec NAME /bin/sh -c CMD``,
this runs ``EXEC_ARGV /bin/sh -c CMD``, where the driver's ``exec_argv`` gives
the prefix (the bare lane: ``RUNTIME --root ROOT exec ID``).  A ``Host`` over it
offers every testinfra module; the checks never know how their commands
travel.

Used in two places, both where pytest (and so testinfra) runs:

* a scenario's ``expect: {testinfra: [...]}`` — ``read_checks`` asks each
  check's module for the attributes the scenario names, while the
  container runs, and returns what it observed; ``verdict.py`` judges;
* Python tests — the ``container_host`` fixture (``conformance/plugin/fixtures.py``)
  yields a Host bound to a running busybox container.

This module imports testinfra and is therefore harness-side only; the
executor reaches it through ``conformance/host/inside.py``, which needs nothing
beyond the standard library.
"""
from __future__ import annotations

import functools
import os
import re
import secrets
import select
import shlex
import subprocess
import time
from typing import Any, Callable, Sequence

import testinfra.host
from testinfra.backend import base

from conformance.model.records import InsideReading
from conformance.model.scenario import InsideCheck

from .drivers.procs import ended_within

EXEC_TIMEOUT_S = 30.0

#: Debian's busybox has no ``getent``; testinfra's group module and the
#: user module's home/shell ask it.  For the ``files`` database (all a busybox
#: image has) it is a lookup by name or number in /etc/<db>, exiting 2 when
#: the key is absent, as getent does.
GETENT_SHIM = (
    "command -v getent >/dev/null || getent() { [ -r \"/etc/$1\" ] || return 1; "
    "[ $# -lt 2 ] && { cat \"/etc/$1\"; return; }; "
    "awk -F: -v k=\"$2\" '$1 == k || (k ~ /^[0-9]+$/ && $3 == k) { print; f = 1; exit } "
    "END { exit f ? 0 : 2 }' \"/etc/$1\"; }; "
)


def _busybox_ps(command: str) -> str:
    """testinfra's BusyboxProcess lists a ``time`` column that Debian's busybox ps lacks.

    testinfra reads it only to notice a pid reused between the two ``ps``
    calls of one lookup.  busybox has no start-time column, and a numeric
    stand-in trips testinfra's own comparison (an int from the list, text
    from the second call), so the controlling tty (text, fixed for a
    process's life) stands in.  Only BusyboxProcess's two command shapes are
    rewritten; ``time`` sits between other columns in both.
    """
    if command.startswith(("ps -A -o ", "ps -o pid,time,")):
        return command.replace(",time,", ",tty,", 1)
    return command


#: testinfra's Interface.exists runs ``ip link show NAME`` and accepts exit 0 or 1 (iproute2's
#: "does not exist"); busybox's ip says "can't find device" with exit 2.
_BUSYBOX_IP_MISSING = re.compile(r"^\S*ip (-f \S+ )?link show ")


def _busybox_ip_status(cmd: str, rc: int, err: bytes) -> int:
    if rc == 2 and b"can't find device" in err and _BUSYBOX_IP_MISSING.match(cmd):
        return 1
    return rc


class _KeptShell:
    """One ``sh`` started by one ``exec``, running command after command (each its own ``sh -c``).

    Every command is sent as one line: ``/bin/sh -c 'CMD' </dev/null``, then
    its exit status and an end mark on stdout and on stderr, so the two
    streams stay apart and a command's own output, with or without a last
    newline, comes back as it was.  Inside the container this costs a fork
    and an exec per command instead of a runtime process per command.
    """

    def __init__(self, exec_argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen([*exec_argv, "/bin/sh"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.mark = secrets.token_hex(8)

    def run(self, script: str, timeout: float) -> tuple[int, bytes, bytes] | None:
        """(exit status, stdout, stderr) of one command; None if the shell is gone or stuck."""
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        line = (f"/bin/sh -c {shlex.quote(script)} </dev/null; printf '\\n__RC_{self.mark} %d\\n' \"$?\"; "
                f"printf '\\n__END_{self.mark}\\n' >&2\n")
        try:
            self.proc.stdin.write(line.encode())
            self.proc.stdin.flush()
        except OSError:
            return None
        rc_mark, end_mark = f"\n__RC_{self.mark} ".encode(), f"\n__END_{self.mark}\n".encode()
        out, err = b"", b""
        deadline = time.monotonic() + timeout
        streams = {self.proc.stdout.fileno(): "out", self.proc.stderr.fileno(): "err"}
        while not (_ends_with_status(out, rc_mark) and err.endswith(end_mark)):
            ready = select.select(list(streams), [], [], max(0.0, deadline - time.monotonic()))[0]
            if not ready:
                return None
            for fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                if streams[fd] == "out":
                    out += chunk
                else:
                    err += chunk
        body, _, status = out[:-1].rpartition(rc_mark)
        return int(status), body, err[:-len(end_mark)]

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            if not ended_within(self.proc, 5):  # the exec's end, on a pidfd: Popen.wait(timeout) polls
                raise subprocess.TimeoutExpired(self.proc.args, 5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _ends_with_status(out: bytes, rc_mark: bytes) -> bool:
    at = out.rfind(rc_mark)
    return at >= 0 and out.endswith(b"\n") and out[at + len(rc_mark):-1].isdigit()


class RuntimeExecBackend(base.BaseBackend):  # type: ignore[misc]  # testinfra ships no type information
    """Run testinfra's commands inside container ``cid`` through ``RUNTIME exec``.

    ``kept_open``: one exec starts a shell that runs every command (``_KeptShell``;
    ``close`` ends it), instead of one exec per command; a shell that fails
    hands over to one exec per command again.
    """

    NAME = "runtime-exec"

    def __init__(self, cid: str, exec_argv: Sequence[str], *args: Any, kept_open: bool = False,
                 **kwargs: Any) -> None:
        self.exec_argv = list(exec_argv)  # e.g. ["runc", "--root", "/run/…", "exec", cid]
        self.kept_open = kept_open
        self.shell: _KeptShell | None = None
        super().__init__(cid, *args, **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        cmd = _busybox_ps(self.get_command(command, *args))
        script = GETENT_SHIM + cmd if "getent" in cmd else cmd
        done = self._in_kept_shell(script)
        if done is None:
            argv = [*self.exec_argv, "/bin/sh", "-c", script]
            try:
                ran = subprocess.run(argv, input=b"", capture_output=True,  # a pipe, never /dev/null (see empty_stdin)
                                     timeout=EXEC_TIMEOUT_S, start_new_session=True)
                done = ran.returncode, ran.stdout, ran.stderr
            except subprocess.TimeoutExpired as exc:
                done = 124, exc.stdout or b"", (exc.stderr or b"") + b"\nexec: no answer in time"
        rc, out, err = done
        return self.result(_busybox_ip_status(cmd, rc, err), self.encode(cmd), out, err)

    def _in_kept_shell(self, script: str) -> tuple[int, bytes, bytes] | None:
        if not self.kept_open:
            return None
        if self.shell is None:
            self.shell = _KeptShell(self.exec_argv)
        done = self.shell.run(script, EXEC_TIMEOUT_S)
        if done is None:  # the shell died or hung: one exec per command from here on
            self.close()
            self.kept_open = False
        return done

    def close(self) -> None:
        if self.shell is not None:
            self.shell.close()
            self.shell = None

    def get_pytest_id(self) -> str:
        return f"{os.path.basename(self.exec_argv[0])}-exec://{self.hostname}"


def container_host(exec_argv: Sequence[str], cid: str, kept_open: bool = False) -> testinfra.host.Host:
    """A testinfra Host whose commands run inside the running container ``cid`` (``exec_argv``: see above).

    ``kept_open``: through one shell kept open (the caller closes ``host.backend``)."""
    host = testinfra.host.Host(RuntimeExecBackend(cid, exec_argv, kept_open=kept_open))
    try:
        _known_linux(host)
    except BaseException:
        host.backend.close()
        raise
    return host


def _known_linux(host: testinfra.host.Host) -> None:
    """Tell testinfra in one command what it would learn with up to six.

    Most modules first ask ``system_info.type`` to pick their Linux class;
    on a busybox root (no /etc/os-release) that costs ``uname -s``, four
    failed release-file probes and ``uname -m``: six ``exec`` round trips per
    Host.  ``uname -sm`` and the os-release file, read at once, answer the same.
    """
    kind, _, rest = host.check_output("uname -sm; cat /etc/os-release 2>/dev/null || true").partition(" ")
    arch, _, release = rest.partition("\n")
    fields = dict(line.split("=", 1) for line in release.splitlines() if "=" in line)

    def value(key: str) -> str | None:
        return fields[key].strip("\"' ") if key in fields else None

    host.system_info.__dict__["sysinfo"] = {  # functools.cached_property's slot
        "type": kind.lower(), "arch": arch.strip(), "distribution": value("ID"),
        "release": value("VERSION_ID"), "codename": value("VERSION_CODENAME")}


# -- scenario checks: module(argument).attribute, read while the container runs ----------
def _process(host: testinfra.host.Host, filters: dict[str, Any] | None) -> Any:
    return _ProcessView(host, dict(filters or {}))


class _ProcessView:
    """``count`` of the processes matching the filters; other attributes of the only match."""

    def __init__(self, host: testinfra.host.Host, filters: dict[str, Any]) -> None:
        self.host, self.filters = host, filters

    @functools.cached_property
    def matches(self) -> list[Any]:
        found: list[Any] = self.host.process.filter(**self.filters)
        return found

    @property
    def count(self) -> int:
        return len(self.matches)

    def __getattr__(self, name: str) -> Any:
        if len(self.matches) != 1:
            raise LookupError(f"{len(self.matches)} processes match {self.filters} "
                              f"(attributes other than count need exactly one)")
        return getattr(self.matches[0], name)


class _SysctlView:
    def __init__(self, host: testinfra.host.Host, name: str) -> None:
        self.value = host.sysctl(name)


#: module name -> how to get the object whose attributes a check reads
MODULES: dict[str, Callable[[testinfra.host.Host, Any], Any]] = {
    "file": lambda host, path: host.file(path),
    "mount_point": lambda host, path: host.mount_point(path),
    "interface": lambda host, name: host.interface(name),
    "sysctl": _SysctlView,
    "user": lambda host, name: host.user(name),
    "group": lambda host, name: host.group(name),
    "process": _process,
}

#: attributes that testinfra offers as methods without arguments
CALLED = {"names"}


def _plain(value: Any) -> Any:
    """A JSON-able copy of what testinfra returned (it may travel back from another host)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


def read_check(host: testinfra.host.Host, index: int, check: InsideCheck) -> list[InsideReading]:
    """Read every attribute a check names; a command that fails makes that reading an error."""
    try:
        subject = MODULES[check.module](host, check.argument)
    except Exception as exc:  # testinfra raises AssertionError for a failed command, and more
        return [InsideReading(index, attr, error=_error(exc)) for attr, _ in check.expect]
    readings = []
    for attr, _ in check.expect:
        try:
            value = getattr(subject, attr)
            value = value() if attr in CALLED else value
            if attr == "mode":  # testinfra gives st_mode's permission bits as an int
                value = f"{value:04o}"
            readings.append(InsideReading(index, attr, value=_plain(value)))
        except Exception as exc:
            readings.append(InsideReading(index, attr, error=_error(exc)))
    return readings


def read_checks(host: testinfra.host.Host, checks: Sequence[InsideCheck]) -> list[InsideReading]:
    return [r for i, check in enumerate(checks) for r in read_check(host, i, check)]


def _error(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"
