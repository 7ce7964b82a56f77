"""cgroup knobs runtime-ref writes, and the switches that break them: a relative cgroupsPath,
sub-cgroups removed on delete, the v2 unified map, hugetlb limits."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

V1_PIDS = Path("/sys/fs/cgroup/pids")
V2 = os.path.ismount("/sys/fs/cgroup") and Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _config(ref, **resources):
    cfg = json.loads(json.dumps(ref.config))
    cfg["linux"]["resources"].update(resources)
    return cfg


def _own_pids_cgroup() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        if "pids" in ctrls.split(",") or (V2 and ctrls == ""):
            return path
    return "/"


def test_a_relative_cgroups_path_goes_below_our_cgroup_unless_cgroups_path(ref):
    for disable, relative in ((None, True), ("cgroups-path", False)):
        cid = ref.new_id()
        cfg = json.loads(json.dumps(ref.config))
        cfg["process"]["args"] = ["sleep", "91"]
        cfg["linux"]["cgroupsPath"] = f"rel-{cid}"
        (ref.bundle / "config.json").write_text(json.dumps(cfg))
        with open(ref.tmp / f"{cid}.out", "w") as out:
            assert ref.cmd("create", "--bundle", str(ref.bundle), cid, disable=disable, capture_output=False,
                           stdout=out, stderr=out).returncode == 0
        pid = ref.state(cid)["pid"]
        path = next(line.split(":", 2)[2] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                    if "pids" in line.split(":")[1].split(",") or (V2 and line.startswith("0::")))
        assert (path == os.path.join(_own_pids_cgroup(), f"rel-{cid}")) is relative, path
        assert ref.cmd("delete", "--force", cid).returncode == 0


@pytest.mark.skipif(V2 or not V1_PIDS.is_dir(), reason="the sub-cgroup is made in the v1 pids hierarchy")
def test_delete_removes_sub_cgroups_unless_cgroup_cleanup(ref):
    from conformance.host.cgroupfs import remove_leftovers
    for disable, removed in ((None, True), ("cgroup-cleanup", False)):
        cid = ref.create(["sleep", "91"], disable=disable)
        (V1_PIDS / cid / "sub" / "nested").mkdir(parents=True)
        assert ref.cmd("delete", "--force", cid).returncode == 0
        assert (not (V1_PIDS / cid).exists()) is removed
        remove_leftovers("/" + cid)  # what the switch left


@pytest.mark.skipif(not V2, reason="linux.resources.unified is cgroup v2's")
def test_unified_map_is_written_unless_unified(ref):
    for disable, value in ((None, "42"), ("unified", "max")):
        cid = ref.create(["sleep", "91"], config=_config(ref, unified={"pids.max": "42"}), disable=disable)
        assert Path(f"/sys/fs/cgroup/{cid}/pids.max").read_text().strip() == value
        ref.cmd("delete", "--force", cid)


def _hugetlb_dir() -> Path | None:
    if Path("/sys/fs/cgroup/hugetlb").is_dir():
        return Path("/sys/fs/cgroup/hugetlb")
    return Path("/sys/fs/cgroup") if V2 and "hugetlb" in Path("/sys/fs/cgroup/cgroup.controllers").read_text() else None


@pytest.mark.skipif(_hugetlb_dir() is None or not Path("/sys/kernel/mm/hugepages/hugepages-2048kB").is_dir(),
                    reason="no hugetlb controller where containers go (v1, or a pure v2 host), or no 2 MB pages")
def test_hugepage_limits_are_written_unless_hugetlb(ref):
    top = _hugetlb_dir()
    assert top is not None
    name = "hugetlb.2MB.max" if V2 else "hugetlb.2MB.limit_in_bytes"
    for disable, written in ((None, True), ("hugetlb", False)):
        cfg = _config(ref, hugepageLimits=[{"pageSize": "2MB", "limit": 4194304}])
        cid = ref.create(["sleep", "91"], config=cfg, disable=disable)
        assert ((top / cid / name).read_text().strip() == "4194304") is written
        ref.cmd("delete", "--force", cid)


@pytest.mark.skipif(V2 or not V1_PIDS.is_dir(), reason="the foreign cgroup is made in the v1 pids hierarchy")
def test_delete_leaves_a_cgroup_it_did_not_make_unless_cgroup_ownership(ref):
    from conftest import reap
    for disable, kept in ((None, True), ("cgroup-ownership", False)):
        foreign = V1_PIDS / f"{ref.tag}-foreign"
        foreign.mkdir()
        try:
            cid = ref.create(["true"], disable=disable)
            pid = ref.state(cid)["pid"]
            (foreign / "cgroup.procs").write_text(str(pid))
            ref.cmd("start", cid)
            reap(pid)
            assert ref.cmd("delete", cid).returncode == 0
            assert foreign.is_dir() is kept
        finally:
            if foreign.is_dir():
                foreign.rmdir()  # ours, and empty once the init is reaped (a failed assert included)
