"""The receiving end of ``--console-socket``: what an engine does for a container with a terminal.

With ``process.terminal`` the runtime makes a pseudo-terminal inside the
container, hands the process its slave as stdin, stdout and stderr, and
sends the master to the AF_UNIX socket ``--console-socket`` names, as one
descriptor in an SCM_RIGHTS message (runc's protocol; the data part is the
pty's name).  The harness listens there, takes the master and copies what
the process writes to the scenario's stdout file, with the terminal's
``\\r\\n`` read back as ``\\n`` (what runc's recvtty does by clearing ONLCR,
done here on the copy: the process may write before any setting could reach
the pty).  The process's input is the pty: nothing is typed there until
``release`` (the container's stdin pipe does not reach a terminal process),
which lets an entrypoint waiting in ``read _`` go as ``Container.release``
does for a pipe: one line, then end of input (echo off first, so that the
typing does not show in the output).
"""
from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Iterator

ACCEPT_S = 30.0  # how long the runtime may take to connect (a create under emulation)
DRAIN_S = 5.0    # how long the copy may run on once the container is done
RELEASE_WAIT_S = 1.0  # how long release waits for a master the runtime sent during create


class Console(threading.Thread):
    """One container's console socket: accepts one connection, takes the master it carries,
    copies the terminal's output to a file.  ``path`` is what ``--console-socket`` names."""

    def __init__(self, listener: socket.socket, path: Path, out: Path) -> None:
        super().__init__(name="console-socket", daemon=True)
        self.listener, self.path, self.out = listener, str(path), out
        self.master: int | None = None
        self.error: str | None = None
        self.received = threading.Event()  # the master came, or never will
        self.released = False
        self.closing = threading.Event()  # the container is gone: stop waiting for a connection
        self.stop = threading.Event()  # the container is done: copy what is left, then end

    def run(self) -> None:
        try:
            conn = self._accept()
            if conn is None:
                return  # no runtime came (it made no terminal, or failed first)
            with conn:
                _msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1, socket.MSG_CMSG_CLOEXEC)
            if not fds:
                self.error = "the runtime connected to the console socket but sent no descriptor"
                return
            self.master = fds[0]
            self.received.set()
            self._copy(self.master)
        except OSError as exc:  # a closed listener (no runtime came), a master that went away
            self.error = self.error or f"console socket: {exc}"
        finally:
            self.received.set()

    def _accept(self) -> socket.socket | None:
        """The runtime's connection; None once ``closing`` is set (or ACCEPT_S passed) and none
        is queued.  A connection queued before ``closing`` is still taken."""
        deadline = time.monotonic() + ACCEPT_S
        while True:
            if select.select([self.listener], [], [], 0.05)[0]:
                return self.listener.accept()[0]
            if self.closing.is_set() or time.monotonic() > deadline:
                return None

    def release(self, timeout: float = RELEASE_WAIT_S) -> None:
        """Type one empty line, then end of input (^D), with echo off: ``read _`` returns, ``cat`` ends.
        Nothing when no master came (a runtime that made no terminal: its stdin is the pipe)."""
        self.received.wait(timeout)
        master = self.master
        if master is None or self.released:
            return
        self.released = True
        with contextlib.suppress(OSError, termios.error):  # the process is gone and the pty with it
            attrs = termios.tcgetattr(master)
            attrs[3] &= ~termios.ECHO
            termios.tcsetattr(master, termios.TCSANOW, attrs)
            os.write(master, b"\n\x04")

    def _copy(self, master: int) -> None:
        with open(self.out, "ab", buffering=0) as out:
            endings = LineEndings()
            while True:
                ready = select.select([master], [], [], 0.05)[0]
                if not ready and not self.stop.is_set():
                    continue
                try:
                    chunk = os.read(master, 65536) if ready else b""
                except OSError:  # EIO: every slave descriptor is closed, the process is gone
                    chunk = b""
                if not chunk:
                    out.write(endings.end())
                    return
                out.write(endings.feed(chunk))


class LineEndings:
    """A terminal's output, ``\\r\\n`` read back as ``\\n``, chunk by chunk (a pair may be split
    between two reads: a trailing ``\\r`` waits for the next chunk)."""

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self.pending + chunk
        self.pending = b"\r" if data.endswith(b"\r") else b""
        return (data[:-1] if self.pending else data).replace(b"\r\n", b"\n")

    def end(self) -> bytes:
        left, self.pending = self.pending, b""
        return left


@contextlib.contextmanager
def console_socket(bundle: Path) -> Iterator[Console]:
    """A listening socket for one container, receiving in a thread; yields it.  The output goes
    to the bundle's ``stdout``.  On leaving, the copy of the terminal's output is given a moment
    to finish, then everything is closed and removed.

    The socket lives in a directory of its own under the temporary directory, not in the bundle:
    an AF_UNIX path holds at most 107 bytes, which a bundle's path may already take.  Both are
    the bundle owner's, so a runtime run by that user (the rootless lane) may connect.
    """
    where = Path(tempfile.mkdtemp(prefix="oci-console-"))
    path = where / "sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        listener.bind(str(path))
        owner = bundle.stat()
        for made in (where, path):
            os.chown(made, owner.st_uid, owner.st_gid)
        listener.listen(1)
    except OSError:
        listener.close()
        shutil.rmtree(where, ignore_errors=True)
        raise
    receiver = Console(listener, path, bundle / "stdout")
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.closing.set()  # an accept still waiting ends now (a queued connection is taken)
        receiver.join(DRAIN_S)  # the copy ends when the last slave closes …
        receiver.stop.set()     # … or, if something holds one open, once nothing more comes
        receiver.join(DRAIN_S)
        listener.close()
        if receiver.master is not None:
            os.close(receiver.master)
        shutil.rmtree(where, ignore_errors=True)
