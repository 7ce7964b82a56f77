"""Whether anything may still write to an output file (conformance/host/writers.py), with real processes."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from conformance.host.writers import may_grow


@pytest.fixture
def out(tmp_path: Path) -> Path:
    path = tmp_path / "stdout"
    path.write_bytes(b"")
    return path


@pytest.fixture
def stdin() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


def _start(script: str, stdin: int, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "ab") as handle:
        return subprocess.Popen(["busybox", "sh", "-c", script], stdin=stdin, stdout=handle, start_new_session=True)


def _settle(path: Path, pipe: int, want: bool, within: float = 5.0) -> bool:
    """may_grow's answer once it is ``want`` (the shell needs a moment to reach its read), else the last one."""
    deadline = time.monotonic() + within
    answer = may_grow(path, pipe)
    while answer != want and time.monotonic() < deadline:
        time.sleep(0.01)
        answer = may_grow(path, pipe)
    return answer


def _stop(proc: subprocess.Popen[bytes], write_end: int, release: bool = True) -> None:
    """Release the shell (or not) and end its whole process group (a background child too)."""
    try:
        if release:
            os.write(write_end, b"\n")
            proc.wait(timeout=5)
    finally:
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait()


def test_no_holder_means_nothing_more_comes(out: Path) -> None:
    assert may_grow(out, None) is False


def test_a_shell_that_printed_and_waits_on_the_harness_s_stdin_adds_nothing(out: Path, stdin) -> None:
    read_end, write_end = stdin
    proc = _start("echo done; read _; echo after", read_end, out)
    try:
        assert _settle(out, os.fstat(read_end).st_ino, want=False) is False
        assert out.read_text() == "done\n"
    finally:
        _stop(proc, write_end)
    assert out.read_text() == "done\nafter\n"


def test_a_sleeping_holder_may_still_write(out: Path, stdin) -> None:
    read_end, write_end = stdin
    proc = _start("sleep 2; echo late", read_end, out)
    try:
        time.sleep(0.2)
        assert may_grow(out, os.fstat(read_end).st_ino) is True
    finally:
        _stop(proc, write_end, release=False)


def test_a_reader_of_another_pipe_may_still_write(out: Path, stdin) -> None:
    read_end, write_end = stdin
    other_r, other_w = os.pipe()
    proc = _start("read _; echo woken", other_r, out)
    try:
        time.sleep(0.2)
        assert may_grow(out, os.fstat(read_end).st_ino) is True  # someone else may feed it
        assert may_grow(out, None) is True  # no stdin of ours to wait on
    finally:
        os.write(other_w, b"\n")
        proc.wait(timeout=5)
        os.close(other_r)
        os.close(other_w)


def test_a_background_child_keeps_it_open(out: Path, stdin) -> None:
    read_end, write_end = stdin
    proc = _start("(sleep 1; echo bg) & read _", read_end, out)
    try:
        time.sleep(0.2)
        assert may_grow(out, os.fstat(read_end).st_ino) is True
    finally:
        _stop(proc, write_end)
