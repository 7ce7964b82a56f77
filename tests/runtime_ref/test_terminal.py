"""process.terminal and --console-socket (runtime_ref/console.py), and switches "terminal" and "console-size".

Each test listens on a console socket as an engine does, takes the master the
init sends, and reads what the process writes to its terminal.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import socket
import struct
import tempfile
import termios
import time
from pathlib import Path

import pytest

from conftest import reap


@pytest.fixture
def console():
    """A listening console socket in a short directory of its own (an AF_UNIX path is short)."""
    where = Path(tempfile.mkdtemp(prefix="rt-console-"))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(where / "sock"))
    listener.listen(1)
    try:
        yield listener, str(where / "sock")
    finally:
        listener.close()
        shutil.rmtree(where)


def _config(ref, shell: str, **process) -> dict:
    cfg = json.loads(json.dumps(ref.config))
    cfg["process"].update(args=["sh", "-c", shell], terminal=True, **process)
    return cfg


def _create(ref, cfg: dict, *flags: str, disable: str | None = None):
    """create with ``flags``; (the id, the finished create) — the init keeps files, not pipes, as stdio."""
    cid = ref.new_id()
    ref.write_config(cfg, cid)
    with open(ref.tmp / f"{cid}.out", "w+") as out, open(ref.tmp / f"{cid}.err", "w+") as err:
        done = ref.cmd("create", "--bundle", str(ref.bundle), *flags, cid, disable=disable,
                       capture_output=False, stdout=out, stderr=err)
        err.seek(0)
        done.stderr = err.read()
    return cid, done


def _take_master(listener: socket.socket) -> tuple[int, str]:
    """The master the init sent (queued already: create returned after sending it) and its name."""
    listener.settimeout(5)
    conn, _ = listener.accept()
    with conn:
        msg, fds, _flags, _addr = socket.recv_fds(conn, 4096, 1)
    assert len(fds) == 1, "no descriptor came with the console socket's message"
    return fds[0], msg.decode()


def _read_all(master: int, timeout: float = 10) -> str:
    """What the process writes to its terminal until every slave is closed (EIO)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out.decode().replace("\r\n", "\n")


def test_the_slave_is_stdio_and_controlling_terminal_and_the_master_goes_to_the_socket(ref, console):
    listener, path = console
    shell = ("tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-ttys; (exec 3</dev/tty) && echo ctty; "
             "read -r p c s pp pgrp sid tty tpgid rest < /proc/1/stat; echo sid=$sid tpgid=$tpgid; "
             "stat -L -c %t:%T /dev/console /proc/self/fd/0; stty size")  # 37 91: nobody else set it
    cid, done = _create(ref, _config(ref, shell, consoleSize={"height": 37, "width": 91}),
                        "--console-socket", path)
    assert done.returncode == 0, done.stderr
    master, name = _take_master(listener)
    try:
        assert name == "/dev/pts/0"  # the container's own devpts instance: its first pty
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(master, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        assert (rows, cols) == (37, 91)  # set before the process could see the pty
        pid = ref.state(cid)["pid"]
        assert os.stat(f"/proc/{pid}/fd/0").st_dev != os.stat("/dev/pts").st_dev  # not the host's devpts
        assert ref.cmd("start", cid).returncode == 0
        lines = _read_all(master).splitlines()
        assert lines[:4] == ["/dev/pts/0", "all-ttys", "ctty", "sid=1 tpgid=1"]
        assert lines[4] == lines[5] == "88:0"  # /dev/console is the pty (major 136 = 0x88)
        assert lines[6] == "37 91"
        assert reap(pid) == 0
    finally:
        os.close(master)
    assert ref.output(cid) == ""  # nothing went to create's own stdout


def test_switch_terminal_leaves_stdio_as_given_and_the_socket_unused(ref, console):
    listener, path = console
    cid, done = _create(ref, _config(ref, "tty; echo done"), "--console-socket", path, disable="terminal")
    assert done.returncode == 0, done.stderr
    pid = ref.state(cid)["pid"]
    assert ref.cmd("start", cid).returncode == 0
    assert reap(pid) == 0
    assert ref.output(cid) == "not a tty\ndone\n"
    listener.settimeout(0.2)
    with pytest.raises(socket.timeout):
        listener.accept()  # nobody connected


def test_switch_console_size_leaves_a_new_pty_s_size(ref, console):
    listener, path = console
    cid, done = _create(ref, _config(ref, "true", consoleSize={"height": 37, "width": 91}),
                        "--console-socket", path, disable="console-size")
    assert done.returncode == 0, done.stderr
    master, _ = _take_master(listener)
    try:
        # (busybox's stty cannot print a 0x0 size: it fails, so the size is read from the master)
        assert struct.unpack("HHHH", fcntl.ioctl(master, termios.TIOCGWINSZ, b"\0" * 8))[:2] == (0, 0)
        pid = ref.state(cid)["pid"]
        assert ref.cmd("start", cid).returncode == 0
        reap(pid)
    finally:
        os.close(master)


def test_a_terminal_without_a_console_socket_is_refused_and_leaves_nothing(ref):
    cid, done = _create(ref, _config(ref, "true"))
    assert done.returncode != 0 and "console socket" in done.stderr
    assert ref.cmd("state", cid).returncode != 0


def test_a_console_socket_without_a_terminal_is_refused(ref, console):
    _, path = console
    cfg = _config(ref, "true")
    cfg["process"]["terminal"] = False
    cid, done = _create(ref, cfg, "--console-socket", path)
    assert done.returncode != 0 and "console socket" in done.stderr
    assert ref.cmd("state", cid).returncode != 0


def test_a_foreground_run_with_a_terminal_is_refused(ref):
    done = ref.run("true", patch=lambda cfg: cfg["process"].update(terminal=True))
    assert done.returncode != 0 and "--detach" in done.stderr


def test_a_console_socket_nobody_listens_on_fails_create(ref, tmp_path):
    cid, done = _create(ref, _config(ref, "true"), "--console-socket", str(tmp_path / "nobody"))
    assert done.returncode != 0 and "--console-socket" in done.stderr
    assert ref.cmd("state", cid).returncode != 0


def test_exec_into_a_terminal_container_gets_no_terminal(ref, console):
    listener, path = console
    cid, done = _create(ref, _config(ref, "read _"), "--console-socket", path)
    assert done.returncode == 0, done.stderr
    master, _ = _take_master(listener)
    try:
        assert ref.cmd("start", cid).returncode == 0
        ran = ref.cmd("exec", cid, "sh", "-c", "tty; true")
        assert ran.stdout == "not a tty\n"  # as runc without -t: exec's own stdio
        assert ref.cmd("exec", "--console-socket", path, cid, "true").returncode != 0
    finally:
        os.close(master)


def test_switch_exec_terminal_takes_the_init_s_terminal_and_refuses_the_exec(ref, console):
    listener, path = console
    cid, done = _create(ref, _config(ref, "read _"), "--console-socket", path, disable="exec-terminal")
    assert done.returncode == 0, done.stderr
    master, _ = _take_master(listener)
    try:
        assert ref.cmd("start", cid).returncode == 0
        ran = ref.cmd("exec", cid, "true")
        assert ran.returncode != 0 and "terminal" in ran.stderr
    finally:
        os.close(master)
