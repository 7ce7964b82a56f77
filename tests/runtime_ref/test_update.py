"""`update`: a running container's limits, raised and lowered, written where create writes them."""
from __future__ import annotations

import json
import os

import pytest

from conftest import reap

pytestmark = pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/pids"), reason="no v1 pids hierarchy here "
                                "(v2: tests/test_hosts.py runs these in a cgroup-v2 guest)")


def _read(path):
    with open(path) as f:
        return f.read().strip()


@pytest.fixture
def limited(ref):
    """A container with limits, whose entrypoint forks 8 sleeps once a line comes on its stdin (``go``)."""
    cfg = json.loads(json.dumps(ref.config))
    cfg["linux"]["resources"]["pids"] = {"limit": 20}
    cfg["linux"]["resources"]["memory"] = {"limit": 64 << 20}
    r, w = os.pipe()
    # (a child shell forks: ash dies at the first fork the kernel refuses; tasks are counted with built-ins)
    cid = ref.create(["sh", "-c", "read _; sh -c 'for i in 1 2 3 4 5 6 7 8; do sleep 9 & done' 2>/dev/null; "
                      "n=0; for p in /proc/[0-9]*; do n=$((n+1)); done; echo tasks=$n"], config=cfg, stdin=r)
    os.close(r)
    pid = ref.state(cid)["pid"]
    try:
        yield cid, pid, lambda: os.write(w, b"go\n")
    finally:
        os.close(w)
        ref.cmd("delete", "--force", cid)
        reap(pid)


def test_update_lowers_and_raises_memory_and_pids(ref, limited):
    cid, _, _ = limited
    ref.cmd("start", cid)
    assert ref.cmd("update", "--pids-limit", "5", "--memory", str(32 << 20), cid).returncode == 0
    assert _read(f"/sys/fs/cgroup/pids/{cid}/pids.max") == "5"
    assert _read(f"/sys/fs/cgroup/memory/{cid}/memory.limit_in_bytes") == str(32 << 20)
    assert ref.cmd("update", "--pids-limit", "50", "--memory", str(96 << 20), cid).returncode == 0
    assert _read(f"/sys/fs/cgroup/pids/{cid}/pids.max") == "50"
    assert _read(f"/sys/fs/cgroup/memory/{cid}/memory.limit_in_bytes") == str(96 << 20)
    assert ref.cmd("update", "--pids-limit", "-1", cid).returncode == 0
    assert _read(f"/sys/fs/cgroup/pids/{cid}/pids.max") == "max"


def test_a_lowered_pids_limit_is_enforced(ref, limited, tmp_path):
    cid, pid, go = limited
    ref.cmd("start", cid)
    assert ref.cmd("update", "--pids-limit", "4", cid).returncode == 0
    go()
    assert reap(pid) == 0
    assert ref.output(cid).strip() in ("tasks=3", "tasks=4")  # not 1 + 8


def test_update_takes_a_resources_file(ref, limited, tmp_path):
    cid, _, _ = limited
    (tmp_path / "res.json").write_text(json.dumps({"pids": {"limit": 7}}))
    assert ref.cmd("update", "--resources", str(tmp_path / "res.json"), cid).returncode == 0
    assert _read(f"/sys/fs/cgroup/pids/{cid}/pids.max") == "7"
    (tmp_path / "bad.json").write_text(json.dumps({"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]}))
    done = ref.cmd("update", "-r", str(tmp_path / "bad.json"), cid)
    assert done.returncode == 1 and "linux.resources.hugepageLimits" in done.stderr


def test_update_under_the_pids_switch_writes_nothing(ref, limited):
    cid, _, _ = limited
    assert ref.cmd("update", "--pids-limit", "5", cid, disable="pids").returncode == 0
    assert _read(f"/sys/fs/cgroup/pids/{cid}/pids.max") == "20"


def test_update_of_a_stopped_or_unknown_container_fails(ref):
    done = ref.cmd("update", "--pids-limit", "5", "nope")
    assert done.returncode == 1 and "does not exist" in done.stderr
    cid = ref.create(["true"])
    pid = ref.state(cid)["pid"]
    ref.cmd("start", cid)
    reap(pid)
    done = ref.cmd("update", "--pids-limit", "5", cid)
    assert done.returncode == 1 and "is not running" in done.stderr
    done = ref.cmd("update", cid)
    assert done.returncode == 1


def test_update_switch_writes_nothing(ref, limited):
    cid, _, _ = limited
    assert ref.cmd("update", "--pids-limit", "5", "--memory", str(32 << 20), cid, disable="update").returncode == 0
    assert _read(f"/sys/fs/cgroup/pids/{cid}/pids.max") == "20"
    assert _read(f"/sys/fs/cgroup/memory/{cid}/memory.limit_in_bytes") == str(64 << 20)
