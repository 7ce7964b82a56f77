"""pause, resume and ps: the freezer and the container's processes, v1 (here) and v2 (tests/test_hosts.py).

Regression (issue 16, bug 7): `delete --force` of a paused container failed ("cannot
remove cgroup: busy") and left the frozen init behind.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from conftest import reap

#: ticks into a file inside, with two children that only sleep
TICKING = ["sh", "-c", "sleep 1001 & sleep 1002 & while :; do date +%s%N > /tmp/tick; sleep 0.05; done"]


def _states(pids):
    out = {}
    for p in pids:
        with open(f"/proc/{p}/stat") as f:
            out[p] = f.read().rpartition(")")[2].split()[0]
    return out


def _ps(ref, cid):
    done = ref.cmd("ps", "--format", "json", cid)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _freezer_v1(cid):
    return f"/sys/fs/cgroup/freezer/{cid}/freezer.state"


@pytest.fixture
def ticking(ref):
    cid = ref.create(TICKING)
    pid = ref.state(cid)["pid"]
    ref.cmd("start", cid)
    deadline = time.monotonic() + 10
    while len(_ps(ref, cid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    yield cid, pid
    ref.cmd("delete", "--force", cid)
    reap(pid)


def test_ps_lists_exactly_the_container_s_processes(ref, ticking):
    cid, pid = ticking
    pids = _ps(ref, cid)
    assert pid in pids and len(pids) in (3, 4)  # sh, two sleeps (and a tick's short sleep)
    for p in pids:
        with open(f"/proc/{p}/cgroup") as f:
            assert f"/{cid}" in f.read()
    table = ref.cmd("ps", cid).stdout.splitlines()
    assert table[0].split() == ["PID", "CMD"] and any("sleep 1001" in line for line in table)
    assert _ps_with_switch(ref, cid) == [pid]


def _ps_with_switch(ref, cid):
    done = ref.cmd("ps", "--format", "json", cid, disable="ps")
    return json.loads(done.stdout)


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/freezer"), reason="no v1 freezer hierarchy")
def test_pause_freezes_every_process_and_resume_thaws_them(ref, ticking):
    cid, pid = ticking
    assert ref.cmd("pause", cid).returncode == 0
    assert ref.state(cid)["status"] == "paused"
    with open(_freezer_v1(cid)) as f:
        assert f.read().strip() == "FROZEN"
    pids = _ps(ref, cid)
    assert set(_states(pids).values()) == {"D"}  # a v1-frozen task reads "D" (TASK_FROZEN)
    done = ref.cmd("exec", cid, "true")
    assert done.returncode != 0 and "paused" in done.stderr
    assert ref.cmd("resume", cid).returncode == 0
    assert ref.state(cid)["status"] == "running"
    with open(_freezer_v1(cid)) as f:
        assert f.read().strip() == "THAWED"
    assert "D" not in _states(_ps(ref, cid)).values()


def test_pause_and_resume_need_the_right_state(ref, ticking):
    cid, _ = ticking
    done = ref.cmd("resume", cid)
    assert done.returncode == 1 and "is not paused (state running)" in done.stderr
    created = ref.create(["sleep", "91"])
    done = ref.cmd("pause", created)
    assert done.returncode == 1 and "is not running (state created)" in done.stderr


def test_freezer_switch_pauses_nothing(ref, ticking):
    cid, _ = ticking
    assert ref.cmd("pause", cid, disable="freezer").returncode == 0
    assert ref.state(cid)["status"] == "running"


def test_delete_force_of_a_paused_container_leaves_nothing(ref, ticking):
    cid, pid = ticking
    pids = _ps(ref, cid)
    ref.cmd("pause", cid)
    done = ref.cmd("delete", cid)
    assert done.returncode == 1 and "(state paused)" in done.stderr
    started = time.monotonic()
    done = ref.cmd("delete", "--force", cid)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 3
    assert reap(pid) == 137
    assert [p for p in pids if os.path.exists(f"/proc/{p}")] == []
    assert not os.path.exists(f"/sys/fs/cgroup/pids/{cid}")


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/freezer"), reason="no v1 freezer hierarchy")
def test_thaw_switch_leaves_the_frozen_init(ref):
    """The control of the scenario above plays the bug; the test then thaws and cleans up itself."""
    cid = ref.create(["sleep", "91"], disable="thaw")
    pid = ref.state(cid)["pid"]
    try:
        ref.cmd("start", cid)
        ref.cmd("pause", cid)
        done = ref.cmd("delete", "--force", cid)
        assert done.returncode == 1 and "cannot remove cgroup" in done.stderr
        assert _states([pid]) == {pid: "D"}
    finally:  # what the switch left: thaw, kill, reap, remove
        with open(_freezer_v1(cid), "w") as f:
            f.write("THAWED")
        os.kill(pid, 9)
        assert reap(pid) == 137
        for d in (f"/sys/fs/cgroup/{h}/{cid}" for h in os.listdir("/sys/fs/cgroup")):
            if os.path.isdir(d):
                os.rmdir(d)
