"""host_setup ns_holder: a process holding PID, IPC, UTS, network and mount namespaces of its own.

Each namespace must hold what its variable says (read from inside it with
nsenter, not from the holder's report), and the holder must end on every way
out: the setup's end, a holder that ignores it (killed), a harness killed
outright (its stdin closes).  Real namespaces throughout.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.host import ns_holder
from conformance.host.drivers import procs
from tests.conftest import REPO

#: nsenter's option for each /proc/PID/ns link
NSENTER = {"uts": "uts", "net": "net", "ipc": "ipc", "mnt": "mount"}


def _inside(pid: str, ns: str, *argv: str) -> str:
    """What ``argv`` prints run in the holder's namespace ``ns`` (and the host's others)."""
    done = subprocess.run(["nsenter", f"--{NSENTER[ns]}=/proc/{pid}/ns/{ns}", *argv], capture_output=True, text=True,
                          timeout=10)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _ended(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if "State:\tZ" in Path(f"/proc/{pid}/status").read_text():
                return True  # ended; its parent (not this process) reaps it
        except (FileNotFoundError, ProcessLookupError):  # gone (ESRCH: between the open and the read)
            return True
        time.sleep(0.01)
    return False


def test_each_namespace_holds_what_its_variable_says(tmp_path):
    with ns_holder.ns_holder(tmp_path) as v:
        pid = v["ns_holder"]
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-3:] == [v["ns_holder_token"].encode(),
                                                                             v["ns_holder_ttl"].encode(), b""]
        assert Path(f"/proc/{pid}/status").read_text().split("NSpid:\t")[1].split("\n")[0].split()[1:] == ["1"]  # its PID 1
        assert _inside(pid, "uts", "cat", "/proc/sys/kernel/hostname").strip() == v["ns_holder_hostname"]
        assert _inside(pid, "net", "cat", "/proc/sys/net/ipv4/ip_default_ttl").strip() == v["ns_holder_ttl"] != "64"
        segments = _inside(pid, "ipc", "cat", "/proc/sysvipc/shm").splitlines()[1:]
        assert [line.split()[0] for line in segments] == [v["ns_holder_shm_key"]]
        assert v["ns_holder_shm_key"] not in [line.split()[0] for line in
                                              Path("/proc/sysvipc/shm").read_text().splitlines()[1:]]
        for t in ns_holder.HOLDER_TYPES:
            assert v[f"ns_holder_ns_{t}"] == os.readlink(f"/proc/{pid}/ns/{t}") != os.readlink(f"/proc/self/ns/{t}")
    assert _ended(int(pid), 0.1), "the holder ended with the setup"


def _mounted(mountinfo: Path, path: Path) -> bool:
    return any(line.split()[4] == str(path) for line in mountinfo.read_text().splitlines())


def test_the_mount_namespace_is_a_slave_of_the_hosts(tmp_path):
    """A mount the host makes later under a shared mount arrives in the holder's namespace (a bundle's
    rootfs mounted after the setup is there for a container joining it); one made there stays there."""
    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "cf-test", str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        with ns_holder.ns_holder(tmp_path) as v:
            pid = v["ns_holder"]
            (shared / "from-host").mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "cf-test", str(shared / "from-host")], check=True)
            _inside(pid, "mnt", "sh", "-c", f"mkdir {shared}/from-holder && mount -t tmpfs cf-test {shared}/from-holder")
            assert _mounted(Path(f"/proc/{pid}/mountinfo"), shared / "from-host")
            assert _mounted(Path(f"/proc/{pid}/mountinfo"), shared / "from-holder")
            assert not _mounted(Path("/proc/self/mountinfo"), shared / "from-holder")
    finally:
        subprocess.run(["umount", "--recursive", "--lazy", str(shared)], check=True)


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "no-pidfd"])
def test_a_holder_that_ignores_its_stdin_is_killed(tmp_path, monkeypatch, pidfd):
    """Also where the kernel has no pidfd (block_until_exit says None): the wait is then polled."""
    if not pidfd:
        monkeypatch.setattr(procs, "block_until_exit", lambda pid, timeout: None)
    monkeypatch.setattr(ns_holder, "STOP_TIMEOUT_S", 0.3)
    monkeypatch.setattr(ns_holder, "HOLDER", ns_holder.HOLDER.replace("read -r _ || exit 0", "exec sleep 60"))
    started = time.monotonic()
    with ns_holder.ns_holder(tmp_path) as v:
        pid = int(v["ns_holder"])
    assert time.monotonic() - started < 3
    assert _ended(pid), "the PID 1 was killed with unshare (--kill-child)"


def test_a_holder_that_fails_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(ns_holder, "HOLDER", "echo cannot set the hostname >&2; exit 3")
    with pytest.raises(OSError, match="the namespace holder failed: cannot set the hostname"):
        with ns_holder.ns_holder(tmp_path):
            pass


_HOLD = """
import sys, time
from pathlib import Path
from conformance.host.ns_holder import ns_holder
with ns_holder(Path(sys.argv[1])) as v:
    print(v["ns_holder"], flush=True)
    time.sleep(60)
"""


def test_a_harness_killed_outright_leaves_no_holder(tmp_path):
    """SIGKILL runs no teardown, but it closes the holder's stdin: the PID 1 ends, and unshare with it."""
    harness = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                               text=True)
    assert harness.stdout is not None
    pid = int(harness.stdout.readline())
    unshare = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    harness.kill()
    harness.wait()
    assert _ended(pid) and _ended(unshare)
