"""Descriptors the harness hands a runtime process, as a careless or a deliberate caller would.

A runtime is started by something: a shell, a shim, systemd.  Whatever that
caller holds open and does not mark close-on-exec, the runtime inherits; what
reaches the container from there is the runtime's business (only stdio, plus
exactly ``--preserve-fds N`` from 3 on).  A scenario's ``launch.fds`` makes the
harness such a caller: it opens each kind of descriptor (model/scenario.py
HANDED_FDS) and starts the runtime with them at 3, 4, … (drivers/procs.py
``with_fds_at_3``).  The file holds ``{{fd_token}}``, so the container can show
which file it got.  Everything is closed when the container is done.

A container with ``process.terminal`` is created with ``--console-socket``
(``launch.console_socket`` can say otherwise, to see a runtime refuse the
mistake): the harness listens there as an engine does (console.py) and the
scenario's stdout is what the process wrote to its terminal.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import socket
from pathlib import Path
from typing import Iterator

from conformance.model.scenario import LaunchSpec

from . import console
from .drivers.base import Launch


@contextlib.contextmanager
def handed(spec: LaunchSpec, bundle: Path, terminal: bool = False,
           ) -> Iterator[tuple[Launch, dict[str, str]]]:
    """(the Launch for the driver, placeholders: ``fd_token``) for one container; closes all on leaving.

    ``terminal``: the config's ``process.terminal``, which decides whether a console socket is
    given unless ``spec.console_socket`` says.
    """
    wanted = terminal if spec.console_socket is None else spec.console_socket
    with contextlib.ExitStack() as stack:
        terminal_end = stack.enter_context(console.console_socket(bundle)) if wanted else None
        with _descriptors(spec, bundle) as (fds, token):
            yield Launch(fds, spec.preserve_fds, terminal_end), {"fd_token": token}


@contextlib.contextmanager
def _descriptors(spec: LaunchSpec, bundle: Path) -> Iterator[tuple[tuple[int, ...], str]]:
    """The descriptors ``spec.fds`` asks for, and the token the file holds; closed on leaving."""
    token = "fd-token-" + secrets.token_hex(6)
    held: list[int] = []
    sockets: list[socket.socket] = []
    try:
        fds = []
        for kind in spec.fds:
            if kind == "file":
                path = bundle / "handed-file"  # beside config.json: not inside the container's root
                path.write_text(token + "\n")
                fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
                held.append(fds[-1])
            elif kind == "socket":
                ours, theirs = socket.socketpair()
                sockets += [ours, theirs]
                fds.append(theirs.fileno())
            else:  # pipe: the runtime gets the read end
                read_end, write_end = os.pipe()
                held += [read_end, write_end]
                fds.append(read_end)
        yield tuple(fds), token
    finally:
        for fd in held:
            os.close(fd)
        for s in sockets:
            s.close()
