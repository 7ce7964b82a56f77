"""Phase: the terminal (``process.terminal``), as runc makes it.

The caller of ``create`` names an AF_UNIX socket with ``--console-socket``;
``create`` connects to it before the clone (``connect``), so that the init
holds the connection.  The init, once inside the container's root (after
pivot_root, so that ``/dev/ptmx`` is the container's devpts and not the
host's), opens a pseudo-terminal pair (``open_pty``): the size
``process.consoleSize`` gives is set, the slave is bound over
``/dev/console`` (config-linux.md: "/dev/console is set up if terminal is
enabled … by bind mounting the pseudoterminal pty to /dev/console") and the
master goes to the caller in one SCM_RIGHTS message, its data the slave's
name (runc's protocol).  The init keeps nothing of the master.  Last,
``process.finish`` makes the slave the controlling terminal of the session
it has just led (``attach``: TIOCSCTTY after setsid) and the process's
stdin, stdout and stderr.

runc's rules for the command line are kept (``check``): ``create`` (and
``run --detach``) with a terminal needs ``--console-socket``, and
``--console-socket`` without a terminal, or on a foreground ``run``, is an
error.  runtime-ref never relays a terminal itself: a foreground ``run`` of
a terminal container is refused (runc would use its own stdio, which must
then be a terminal).
"""
from __future__ import annotations

import os

from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .hints import Process

TIOCGPTN = 0x80045430    # the pty's number
TIOCSPTLCK = 0x40045431  # (un)lock the slave


def check(proc: Process, console_socket: str | None, detach: bool) -> None:
    """runc's ``checkTerminal``: the flags must fit the config before anything is made."""
    terminal = bool(proc.get("terminal"))
    if terminal and not detach:
        raise Error("process.terminal needs --detach and --console-socket: runtime-ref does not relay "
                    "a terminal on its own stdio")
    if terminal and not console_socket:
        raise Error("cannot allocate tty if runtime-ref will detach without setting console socket "
                    "(--console-socket)")
    if console_socket and not terminal:
        raise Error("cannot use console socket if runtime-ref will not detach or allocate tty "
                    "(process.terminal is false)")


def connect(path: str) -> int:
    """A connected descriptor on the caller's console socket (close-on-exec: the init closes it)."""
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise Error("--console-socket %s: %s" % (path, e.strerror or e)) from None
    return sock.detach()


def open_pty(sock_fd: int, size: dict[str, int] | None, bind_console: bool) -> int:
    """In the container's root: a new pty pair; the master is sent on ``sock_fd``, the slave returned.

    ``size``: ``process.consoleSize`` ({height, width}), set on the pty before anyone sees it.
    ``bind_console``: bind the slave over /dev/console (in a mount namespace of our own).
    """
    import fcntl
    import struct
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        name = "/dev/pts/%d" % struct.unpack("I", fcntl.ioctl(master, TIOCGPTN, b"\0" * 4))[0]
        if size and size.get("height") and size.get("width"):
            import termios
            fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size["height"], size["width"], 0, 0))
        slave = os.open(name, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        if bind_console:
            _bind_console(name)
        _send_master(sock_fd, master, name)
    finally:
        os.close(master)
        os.close(sock_fd)
    return slave


def _bind_console(name: str) -> None:
    from . import linux as L
    if not os.path.exists("/dev/console"):
        os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    L.mount(name, "/dev/console", None, L.MS_BIND)


def _send_master(sock_fd: int, master: int, name: str) -> None:
    import socket
    sock = socket.socket(fileno=os.dup(sock_fd))
    try:
        socket.send_fds(sock, [name.encode()], [master])
    finally:
        sock.close()


def attach(slave: int, controlling: bool) -> None:
    """Make ``slave`` the process's stdin, stdout and stderr, and (after setsid) its controlling terminal."""
    if controlling:
        import fcntl
        import termios
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
