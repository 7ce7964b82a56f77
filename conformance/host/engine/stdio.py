"""A task's (or an exec'd process's) stdio through FIFOs the shim opens, copied to and from the harness's ends.

containerd's shim does not take descriptors: it opens the paths it is given
(``stdin``, ``stdout``, ``stderr`` of ``Tasks.Create`` and ``Tasks.Exec``),
FIFOs as ``ctr`` makes them.  The harness copies its own ends into and out
of them with one thread each.
"""
from __future__ import annotations

import os
import select
import threading
from pathlib import Path
from typing import IO, Callable

from ..console import LineEndings

#: after the process is gone: how long the copies of its stdout and stderr get to drain
DRAIN_S = 2.0


class _Copy(threading.Thread):
    """Copies from one descriptor to another until the source ends, then calls ``at_end``.

    Both descriptors are this copy's own (it closes them); a source that never
    ends (a shim that died, a stdin never closed) is cut off by ``finish``.
    """

    def __init__(self, source: int, target: int, at_end: Callable[[], None] | None = None,
                 endings: LineEndings | None = None, at_first: Callable[[], None] | None = None) -> None:
        super().__init__(daemon=True)
        os.set_blocking(source, False)
        self.source, self.target, self.at_end, self.endings = source, target, at_end, endings
        self.at_first = at_first  # called once, before the first bytes are written
        self.stop_r, self.stop_w = os.pipe()

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.source, select.POLLIN | select.POLLHUP)
        poller.register(self.stop_r, select.POLLIN)
        ended = False
        try:
            while not ended:
                ready = dict(poller.poll())
                if self.source in ready:
                    ended = not self._copy_some()
                elif self.stop_r in ready:
                    break
            if self.endings is not None:
                self._write(self.endings.end())
        finally:
            os.close(self.source)
            os.close(self.target)
        if ended and self.at_end is not None:
            self.at_end()

    def _copy_some(self) -> bool:
        """One read's worth; False at the source's end."""
        try:
            data = os.read(self.source, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        self._write(self.endings.feed(data) if self.endings is not None else data)
        return True

    def _write(self, data: bytes) -> None:
        if data and self.at_first is not None:
            self.at_first()
            self.at_first = None
        view = memoryview(data)
        while view:
            view = view[os.write(self.target, view):]

    def finish(self, timeout: float) -> None:
        self.join(timeout)
        if self.is_alive():
            os.write(self.stop_w, b"x")
            self.join()
        os.close(self.stop_r)
        os.close(self.stop_w)


class TaskIO:
    """A task's stdio: FIFOs in ``bundle`` (a directory of the task's) that the shim opens, and the harness's ends copied to and from them.

    stdin: the harness's pipe is copied into ``stdin.fifo``; at its end the
    shim is told (``CloseIO``: it holds the FIFO open itself until then), so an
    entrypoint's ``read _`` ends when the harness closes its end, as on the bare
    lane.  stdout, stderr: what the shim writes into ``stdout.fifo`` and
    ``stderr.fifo`` is copied into the harness's files.

    ``terminal``: the shim relays the task's pty, the stdin FIFO into it and
    its output into ``stdout.fifo`` (there is no stderr).  The output's
    ``\\r\\n`` is read back as ``\\n`` (console.LineEndings, as for a console
    socket on the bare lane); what the harness types is not echoed
    (``echo_off``, called before its first byte, as console.Console.release
    does on the master); the end of the harness's pipe is typed as ^D (end of
    input on a terminal) instead: ``CloseIO`` would make the shim shut the
    pty, hanging up on the process.
    """

    def __init__(self, bundle: Path, stdin: int | None, stdout: IO[bytes], stderr: IO[bytes],
                 close_stdin: Callable[[], None], start: bool = True, terminal: bool = False,
                 echo_off: Callable[[], None] | None = None) -> None:
        self.copies: list[_Copy] = []
        self.stdin = ""
        if stdin is not None:
            self.stdin = self._fifo(bundle / "stdin.fifo")
            at_end = self._type_end_of_input if terminal else close_stdin
            # read and write: opens without a reader, and is no reader the shim competes with (never read)
            self.copies.append(_Copy(os.dup(stdin), os.open(self.stdin, os.O_RDWR), at_end,
                                     at_first=echo_off if terminal else None))
        self.stdout = self._fifo(bundle / "stdout.fifo")
        self.stderr = "" if terminal else self._fifo(bundle / "stderr.fifo")
        # no writer yet: poll stays quiet until the shim opens it, and reports its end after
        self.copies.append(_Copy(os.open(self.stdout, os.O_RDONLY | os.O_NONBLOCK), os.dup(stdout.fileno()),
                                 endings=LineEndings() if terminal else None))
        if self.stderr:
            self.copies.append(_Copy(os.open(self.stderr, os.O_RDONLY | os.O_NONBLOCK), os.dup(stderr.fileno())))
        if start:
            self.start()

    def start(self) -> None:
        """Begin copying.  An exec's copies begin once its process started: a stdin that ends at once
        would otherwise be closed (``CloseIO``) before containerd knows the process."""
        for copy in self.copies:
            copy.start()

    def _type_end_of_input(self) -> None:
        """^D on the task's terminal (the shim holds the stdin FIFO open and copies it into the pty)."""
        try:
            fd = os.open(self.stdin, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # the shim is gone, and the terminal with it
            return
        try:
            os.write(fd, b"\x04")
        except OSError:
            pass
        finally:
            os.close(fd)

    @staticmethod
    def _fifo(path: Path) -> str:
        os.mkfifo(path, 0o600)
        return str(path)

    def finish(self, timeout: float = DRAIN_S) -> None:
        """After the task is gone: drain the outputs, stop the stdin copy.  A writer opened and closed on
        each output FIFO ends a copy whose FIFO the shim never opened (a create that failed); one the
        shim still writes ends when the shim closes it."""
        for fifo in filter(None, (self.stdout, self.stderr)):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # the copy ended already and closed its reader
                pass
        for copy in self.copies:
            copy.finish(timeout if copy.at_end is None else 0)
