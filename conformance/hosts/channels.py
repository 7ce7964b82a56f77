"""How a kept-open agent's bytes travel: over the connection testinfra's backend already has.

An agent is one long-lived command on the host; the harness writes request
lines to its stdin and reads answer lines from its stdout.  Which pipe that
is follows from the ``--hosts`` spec's backend, as testinfra builds it:

- ``paramiko://`` (and the ``qemu://`` guests, reached through paramiko): one
  more session channel on the backend's own SSH connection;
- ``ssh://``: one ``ssh`` process, with the very options testinfra's
  SshBackend would give it (``-F``, ``-i``, port, user, ControlMaster …);
- ``ansible://HOST``: the connection the inventory's host vars name, as
  testinfra itself resolves it (``ansible_runner.get_host``: an ssh,
  paramiko or local backend), then as above;
- ``local://`` (testinfra's local backend): a local process.

A backend that offers no such stream (``--force-ansible``, docker,
kubectl …) gets None here; the target then starts the agent once per
request instead (agent_link.py).
"""
from __future__ import annotations

import os
import select
import subprocess
import tempfile
import time
from typing import Any, Callable, Protocol

#: what is kept of an agent's error output (its traceback, a runtime's complaint)
STDERR_KEPT = 4000


class Channel(Protocol):
    """A command running on a host, with its stdin and stdout as a line pipe."""

    def send(self, data: bytes) -> None:
        """Write to the command's stdin (OSError when the pipe is gone)."""

    def readline(self, deadline: float) -> bytes | None:
        """The next line (with its newline); b"" at the end of output; None when ``deadline``
        (time.monotonic) passed first."""

    def stderr_tail(self) -> str:
        """The last of what the command wrote to stderr, for error messages."""

    def finish(self, wait_s: float) -> int | None:
        """Close its stdin and wait up to ``wait_s`` for it to end; its exit status, or None."""

    def drop(self) -> None:
        """Cut the connection (the command's stdin and stdout close); returns at once."""


class _LineBuffer:
    def __init__(self) -> None:
        self.data = b""
        self.err = b""

    def take_line(self) -> bytes | None:
        cut = self.data.find(b"\n")
        if cut < 0:
            return None
        line, self.data = self.data[:cut + 1], self.data[cut + 1:]
        return line

    def read_line(self, deadline: float, receive: Callable[[float], bytes | None]) -> bytes | None:
        """The next line; what is left at the end of input (b"" once nothing is); None at the deadline.

        ``receive(remaining)`` waits at most that long and returns a chunk, b"" at the end of input,
        or None when nothing came (each channel knows its own way to wait).
        """
        while True:
            line = self.take_line()
            if line is not None:
                return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            chunk = receive(remaining)
            if chunk is None:
                continue
            if not chunk:
                line, self.data = self.data, b""
                return line
            self.data += chunk

    def add_err(self, chunk: bytes) -> None:
        self.err = (self.err + chunk)[-STDERR_KEPT:]


class ParamikoChannel:
    """A session channel on a paramiko SSHClient's transport (``exec_command``)."""

    def __init__(self, client: Any, command: str) -> None:
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise OSError("the SSH connection is closed")
        self.chan = transport.open_session()
        self.chan.exec_command(command)
        self.buf = _LineBuffer()

    def send(self, data: bytes) -> None:
        try:
            self.chan.sendall(data)
        except Exception as exc:  # paramiko raises socket.error or SSHException on a closed channel
            raise OSError(f"cannot write to the agent: {exc}") from None

    def _drain_stderr(self) -> None:
        while self.chan.recv_stderr_ready():
            self.buf.add_err(self.chan.recv_stderr(65536))

    def readline(self, deadline: float) -> bytes | None:
        return self.buf.read_line(deadline, self._receive)

    def _receive(self, remaining: float) -> bytes | None:
        select.select([self.chan.fileno()], [], [], remaining)
        self._drain_stderr()
        chunk = self.chan.recv(65536) if self.chan.recv_ready() else \
            b"" if self.chan.eof_received or self.chan.closed else None
        if chunk == b"":
            self._drain_stderr()  # the agent's last words, before its end is reported
        return chunk

    def stderr_tail(self) -> str:
        self._drain_stderr()
        return self.buf.err.decode(errors="replace")

    def finish(self, wait_s: float) -> int | None:
        try:
            self.chan.shutdown_write()
        except Exception:  # already closed
            pass
        deadline = time.monotonic() + wait_s
        while self.readline(deadline) not in (b"", None):
            pass  # output nobody asked for: dropped
        while not self.chan.exit_status_ready() and time.monotonic() < deadline:
            time.sleep(0.02)
        status: int | None = self.chan.recv_exit_status() if self.chan.exit_status_ready() else None
        self.chan.close()
        return status

    def drop(self) -> None:
        self.chan.close()


class ProcessChannel:
    """A local process: ``ssh … COMMAND`` for ssh:// hosts, ``sh -c COMMAND`` for local ones.

    It runs in a session of its own, so a Ctrl-C typed at the terminal
    reaches the harness (which closes the agent in order) and not this pipe.
    """

    def __init__(self, argv: list[str]) -> None:
        self.errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errors,
                                     start_new_session=True)
        self.buf = _LineBuffer()

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def readline(self, deadline: float) -> bytes | None:
        return self.buf.read_line(deadline, self._receive)

    def _receive(self, remaining: float) -> bytes | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        return os.read(fd, 65536) if select.select([fd], [], [], remaining)[0] else None

    def stderr_tail(self) -> str:
        self.errors.seek(0)
        return self.errors.read()[-STDERR_KEPT:].decode(errors="replace")

    def finish(self, wait_s: float) -> int | None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if self.proc.returncode is None:
                self.drop()

    def drop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self.errors.close()


def opener(backend: Any) -> Any:
    """A function ``command -> Channel`` over ``backend``'s connection, or None when it has no stream.

    Dispatches on testinfra's backend names (``NAME``), so nothing here
    depends on testinfra's import paths.
    """
    name = getattr(backend, "NAME", "")
    if name == "paramiko":
        return lambda command: ParamikoChannel(backend.client, command)
    if name in ("ssh", "safe-ssh"):
        def over_ssh(command: str) -> ProcessChannel:
            cmd, args = backend._build_ssh_command(command)
            return ProcessChannel(["/bin/sh", "-c", backend.get_command(" ".join(cmd), *args)])
        return over_ssh
    if name == "local":
        return lambda command: ProcessChannel(["/bin/sh", "-c", command])
    if name == "ansible" and not getattr(backend, "force_ansible", False):
        host = backend.ansible_runner.get_host(backend.host, ssh_config=backend.ssh_config,
                                               ssh_identity_file=backend.ssh_identity_file)
        return None if host is None else opener(host.backend)
    return None
