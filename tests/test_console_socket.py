"""The receiving end of --console-socket (conformance/host/console.py), with a real pty and no runtime."""
from __future__ import annotations

import array
import os
import socket
import time
from pathlib import Path

from conformance.host.console import console_socket


def _send_master(path: str, master: int) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendmsg([b"/dev/pts/9"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])


def test_the_master_is_received_and_the_terminal_s_output_lands_in_stdout(tmp_path):
    (tmp_path / "stdout").write_bytes(b"")
    with console_socket(tmp_path) as console:
        where = Path(console.path).parent
        master, slave = os.openpty()
        _send_master(console.path, master)
        os.close(master)  # the harness holds its own copy now
        os.write(slave, b"one\ntwo\n")  # ONLCR: the terminal turns each \n into \r\n
        os.close(slave)
    assert (tmp_path / "stdout").read_text() == "one\ntwo\n"
    assert not where.exists()  # the socket and its directory are gone


def test_the_socket_path_fits_an_af_unix_address_whatever_the_bundle_s_path(tmp_path):
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    with console_socket(deep) as console:
        assert len(console.path) < 108
        assert socket.socket(socket.AF_UNIX).connect_ex(console.path) == 0


def test_release_types_one_line_then_end_of_input_without_echo(tmp_path):
    (tmp_path / "stdout").write_bytes(b"")
    master, slave = os.openpty()
    try:
        with console_socket(tmp_path) as console:
            _send_master(console.path, master)
            os.write(slave, b"before\n")
            console.release()
            assert os.read(slave, 100) == b"\n"   # the line (canonical mode: one read, one line)
            assert os.read(slave, 100) == b""     # then ^D: end of input
            os.write(slave, b"after\n")
            os.close(slave)
            slave = -1
        assert (tmp_path / "stdout").read_text() == "before\nafter\n"  # nothing echoed
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_release_without_a_master_does_nothing(tmp_path):
    with console_socket(tmp_path) as console:
        started = time.monotonic()
        console.release(timeout=0.2)
        assert console.master is None and time.monotonic() - started < 1


def test_a_runtime_that_never_connects_holds_nothing_up(tmp_path):
    started = time.monotonic()
    with console_socket(tmp_path):
        pass
    assert time.monotonic() - started < 2


def test_a_slave_left_open_does_not_hold_the_harness(tmp_path):
    (tmp_path / "stdout").write_bytes(b"")
    master, slave = os.openpty()
    try:
        started = time.monotonic()
        with console_socket(tmp_path) as console:
            _send_master(console.path, master)
            os.write(slave, b"partial")
        assert time.monotonic() - started < 12
        assert (tmp_path / "stdout").read_text() == "partial"
    finally:
        os.close(master)
        os.close(slave)
