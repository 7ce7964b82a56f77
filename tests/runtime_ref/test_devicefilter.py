"""The cgroup v2 device filter (an eBPF program), tried on any cgroup2 mount."""
import os
import secrets

import pytest

from runtime_ref import cgroups, devicefilter


def _cgroup2_mount():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "cgroup2":
                return pre.split()[4]
    return None


@pytest.fixture
def cgroup2_dir():
    mnt = _cgroup2_mount()
    if not mnt:
        pytest.skip("host has no cgroup2 mount")
    d = os.path.join(mnt, "cf-rtbpf" + secrets.token_hex(4))
    os.mkdir(d)
    yield d
    os.rmdir(d)


def _opens(cgroup_dir, paths, flags=os.O_RDONLY):
    """Open each path from a child placed in cgroup_dir; {path: errno or 0}."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
            f.write("0")
        out = []
        for p in paths:
            try:
                os.close(os.open(p, flags))
                out.append("0")
            except OSError as e:
                out.append(str(e.errno))
        os.write(w, " ".join(out).encode())
        os._exit(0)
    os.close(w)
    res = os.read(r, 1000).decode().split()
    os.close(r)
    os.waitpid(pid, 0)
    return dict(zip(paths, map(int, res)))


def test_default_rules_allow_null_and_refuse_a_disk(cgroup2_dir):
    res = {"devices": [{"allow": False, "access": "rwm"}]}
    devicefilter.attach(cgroup2_dir, cgroups.device_rules(res, []))
    disk = "/dev/vda" if os.path.exists("/dev/vda") else "/dev/loop0"
    got = _opens(cgroup2_dir, ["/dev/null", "/dev/zero", disk])
    assert got == {"/dev/null": 0, "/dev/zero": 0, disk: 1}


def test_later_rules_override_earlier_ones(cgroup2_dir):
    devicefilter.attach(cgroup2_dir, [(False, "a *:* rwm"), (True, "c 1:3 rwm"), (False, "c 1:3 w")])
    assert _opens(cgroup2_dir, ["/dev/null", "/dev/zero"]) == {"/dev/null": 0, "/dev/zero": 1}
    assert _opens(cgroup2_dir, ["/dev/null"], os.O_WRONLY) == {"/dev/null": 1}
