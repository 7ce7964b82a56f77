"""What the caller's open descriptors and process group do to a container.

Regressions (issue 16): every descriptor open in the process that ran `runtime-ref
run/create` reached the container and `--preserve-fds` was ignored (bug 2); the
init and exec'd processes were not session leaders, so getpgrp() read 0 inside (bug 3).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from conformance.host.drivers.procs import with_fds_at_3
from conftest import LAUNCHER, reap

#: the shell's own descriptors, one per line (no pipe: a pipeline's ends would be listed too)
LIST_FDS = "ls -1 /proc/$$/fd; echo --"


def fds_of(stdout: str) -> list[int]:
    """The descriptors LIST_FDS printed, in order."""
    return sorted(int(n) for n in stdout.partition("--")[0].split())


def after(stdout: str) -> list[str]:
    """What the shell printed after LIST_FDS."""
    return stdout.partition("--\n")[2].splitlines()


@pytest.fixture
def handed(tmp_path):
    """A file, a socket and a pipe, as a caller would hold them (the file holds a token)."""
    token = tmp_path / "token"
    token.write_text("token-16\n")
    f = open(token)
    a, b = socket.socketpair()
    r, w = os.pipe()
    try:
        yield (f.fileno(), a.fileno(), r)
    finally:
        for fd in (r, w):
            os.close(fd)
        f.close()
        a.close()
        b.close()


def test_only_stdio_reaches_the_container(ref, handed):
    done = ref.run(LIST_FDS, fds=handed)
    assert fds_of(done.stdout) == [0, 1, 2], done.stderr


def test_preserve_fds_passes_exactly_n_in_order(ref, handed):
    done = ref.run(LIST_FDS + "; cat <&3; readlink /proc/$$/fd/4", fds=handed,
                   extra=["--preserve-fds", "2"])
    assert fds_of(done.stdout) == [0, 1, 2, 3, 4], done.stderr
    token, sock = after(done.stdout)
    assert token == "token-16" and sock.startswith("socket:")


def test_preserve_fds_of_a_descriptor_never_passed_is_an_error(ref, handed):
    done = ref.run("true", fds=handed[:1], extra=["--preserve-fds", "2"])
    assert done.returncode == 1 and "descriptor 4 was not passed" in done.stderr


def test_listen_fds_for_us_are_passed_with_their_variables(ref, handed):
    """systemd's socket activation, as runc honours it: only when LISTEN_PID names the runtime."""
    shell = LIST_FDS + "; echo $LISTEN_FDS $LISTEN_PID"
    done = ref.run(shell, fds=handed[:2], env={"LISTEN_FDS": "2", "LISTEN_PID": "1"})
    assert fds_of(done.stdout) == [0, 1, 2], "LISTEN_PID not ours: nothing passes"
    cfg = json.loads(json.dumps(ref.config))
    cfg["process"]["args"] = ["sh", "-c", shell]
    cid = ref.new_id()
    ref.write_config(cfg, cid)
    as_systemd = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=2 exec "$0" "$@"', str(LAUNCHER),
                  "--root", str(ref.root), "run", "--bundle", str(ref.bundle), cid]
    argv, parked, env = with_fds_at_3(as_systemd, handed[:2])
    try:
        done = subprocess.run(argv, pass_fds=parked, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=60)
    finally:
        for fd in parked:
            os.close(fd)
    assert fds_of(done.stdout) == [0, 1, 2, 3, 4], done.stderr
    assert after(done.stdout) == ["2 1"]


def test_exec_gets_stdio_and_its_preserve_fds_only(ref, handed):
    cid = ref.create(["sleep", "91"])
    ref.cmd("start", cid)
    done = ref.cmd("exec", cid, "sh", "-c", LIST_FDS, fds=handed)
    assert fds_of(done.stdout) == [0, 1, 2], done.stderr
    done = ref.cmd("exec", "--preserve-fds", "1", cid, "sh", "-c", LIST_FDS + "; cat <&3", fds=handed)
    assert fds_of(done.stdout) == [0, 1, 2, 3] and after(done.stdout) == ["token-16"], done.stderr


def test_close_fds_switch_leaks_every_descriptor(ref, handed):
    done = ref.run(LIST_FDS, fds=handed, disable="close-fds")
    assert {3, 4, 5} <= set(fds_of(done.stdout)), done.stdout


STAT = "read -r pid comm state ppid pgrp sid rest < /proc/$$/stat; echo $pid $pgrp $sid"


def test_init_is_a_session_leader(ref):
    assert ref.run(STAT).stdout.split() == ["1", "1", "1"]
    assert ref.run(STAT, disable="session").stdout.split() == ["1", "0", "0"]


def test_exec_d_process_leads_its_own_session(ref):
    cid = ref.create(["sleep", "91"])
    pid = ref.state(cid)["pid"]
    ref.cmd("start", cid)
    mine, pgrp, sid = ref.cmd("exec", cid, "sh", "-c", STAT).stdout.split()
    assert mine == pgrp == sid and mine != "1"
    with open(f"/proc/{pid}/stat") as f:  # the init, from the host: pid == pgrp == sid
        fields = f.read().rpartition(")")[2].split()
    assert fields[2] == fields[3] == str(pid)
    ref.cmd("delete", "--force", cid)
    reap(pid)


def test_preserve_fds_switch_drops_the_flag(ref, handed):
    done = ref.run(LIST_FDS, fds=handed, extra=["--preserve-fds", "2"], disable="preserve-fds")
    assert fds_of(done.stdout) == [0, 1, 2], done.stderr
