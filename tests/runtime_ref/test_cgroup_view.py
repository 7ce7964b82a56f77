"""The container's /sys/fs/cgroup shows its own cgroup, wherever the runtime placed it.

Regression (issue 16, bug 1): with no linux.cgroupsPath and no cgroup namespace,
/sys/fs/cgroup/* were bind mounts of the host's hierarchy roots: the container
listed the machine's cgroups, and its own pids.max was not where it should be.
"""
from __future__ import annotations

import glob
import json
import os

import pytest

from conftest import reap

CGROUP_MOUNT = {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
#: each cgroup mount's root (field 4) and mount point (field 5), then the container's own paths
VIEW = ("awk '$9 ~ /^cgroup2?$/ {print $4, $5, $6}' /proc/self/mountinfo; echo --; cat /proc/self/cgroup; "
        "echo --; ls /sys/fs/cgroup/pids 2>/dev/null || ls /sys/fs/cgroup")

pytestmark = pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/pids") and
                                not os.path.exists("/sys/fs/cgroup/cgroup.controllers"),
                                reason="no pids hierarchy and no cgroup v2 on this host")


def _run_without_cgroups_path(ref, disable=None, cgroups_path=None):
    cfg = json.loads(json.dumps(ref.config))
    cfg["mounts"].append(dict(CGROUP_MOUNT))
    cfg["process"]["args"] = ["sh", "-c", VIEW]
    if cgroups_path:
        cfg["linux"]["cgroupsPath"] = cgroups_path
    cid = ref.new_id()
    (ref.bundle / "config.json").write_text(json.dumps(cfg))  # not write_config: it adds a cgroupsPath
    done = ref.cmd("run", "--bundle", str(ref.bundle), cid, disable=disable)
    assert done.returncode == 0, done.stderr
    mounts, own, listing = done.stdout.split("--\n")
    roots = {line.split()[1]: line.split()[0] for line in mounts.splitlines()}  # mount point -> root
    access = {line.split()[1]: line.split()[2].split(",")[0] for line in mounts.splitlines()}
    if disable != "cgroup-view":
        assert set(access.values()) == {"ro"}, access  # as the mount's options say
    else:
        assert "rw" in set(access.values()), access  # the control binds the roots read-write too
    paths = {}
    for line in own.splitlines():
        _, ctrls, path = line.split(":", 2)
        for ctrl in ctrls.split(",") or [""]:
            paths[ctrl.replace("name=", "")] = path
    return cid, roots, paths, listing.split()


def _own_path(paths, mount_point):
    """The container's path in the hierarchy mounted at /sys/fs/cgroup/NAME (or /sys/fs/cgroup)."""
    name = os.path.basename(mount_point)
    return paths.get(name) or paths.get("")


def test_without_cgroups_path_the_container_sees_only_its_own_cgroup(ref):
    cid, roots, paths, listing = _run_without_cgroups_path(ref)
    assert roots, "no cgroup mount inside"
    for mount_point, root in roots.items():
        if mount_point == "/sys/fs/cgroup/unified":
            continue  # hybrid: runtime-ref does not use the controller-less cgroup2 tree
        assert root == _own_path(paths, mount_point) == f"/runtime-ref/{cid}", (mount_point, roots, paths)
    assert "pids.max" in listing or "cgroup.procs" in listing
    assert not any(entry in listing for entry in ("runtime-ref", "system.slice", "user.slice"))
    assert glob.glob(f"/sys/fs/cgroup/*/runtime-ref/{cid}") + glob.glob(f"/sys/fs/cgroup/runtime-ref/{cid}") == []


def test_with_cgroups_path_too(ref):
    cid, roots, paths, _ = _run_without_cgroups_path(ref, cgroups_path=f"/{ref.tag}-given")
    assert set(roots.values()) - {"/"} == {f"/{ref.tag}-given"}


def test_cgroup_view_switch_binds_the_host_roots(ref):
    _, roots, _, listing = _run_without_cgroups_path(ref, disable="cgroup-view")
    assert set(roots.values()) == {"/"}
    assert "runtime-ref" in listing or "cgroup.procs" in listing


def test_default_cgroup_switch_leaves_the_container_in_ours(ref):
    with open("/proc/self/cgroup") as f:
        mine = f.read().splitlines()
    _, roots, paths, _ = _run_without_cgroups_path(ref, disable="default-cgroup")
    pids_line = next(line for line in mine if ":pids:" in line or line.startswith("0::"))
    assert paths.get("pids", paths.get("")) == pids_line.split(":", 2)[2]


def test_delete_of_a_default_placed_container_removes_its_cgroups(ref):
    cfg = json.loads(json.dumps(ref.config))
    cfg["process"]["args"] = ["sleep", "91"]
    cid = ref.new_id()
    (ref.bundle / "config.json").write_text(json.dumps(cfg))
    with open(ref.tmp / "out", "w") as out:
        assert ref.cmd("create", "--bundle", str(ref.bundle), cid, stdout=out, stderr=out,
                       capture_output=False).returncode == 0
    pid = ref.state(cid)["pid"]
    assert glob.glob(f"/sys/fs/cgroup/*/runtime-ref/{cid}") or glob.glob(f"/sys/fs/cgroup/runtime-ref/{cid}")
    assert ref.cmd("delete", "--force", cid).returncode == 0
    reap(pid)
    assert glob.glob(f"/sys/fs/cgroup/*/runtime-ref/{cid}") + glob.glob(f"/sys/fs/cgroup/runtime-ref/{cid}") == []
    # the shared parent goes with the last container in it, whichever made it
    for parent in glob.glob("/sys/fs/cgroup/*/runtime-ref") + glob.glob("/sys/fs/cgroup/runtime-ref"):
        assert [e for e in os.scandir(parent) if e.is_dir()], f"{parent} left empty"


def test_the_shared_parent_goes_with_the_last_container_whoever_made_it(ref):
    cfg = json.loads(json.dumps(ref.config))
    cfg["process"]["args"] = ["sleep", "91"]
    first, second = ref.new_id(), ref.new_id()
    pids = []
    with open(ref.tmp / "out", "w") as out:
        for cid in (first, second):
            (ref.bundle / "config.json").write_text(json.dumps(cfg))
            assert ref.cmd("create", "--bundle", str(ref.bundle), cid, stdout=out, stderr=out,
                           capture_output=False).returncode == 0
            pids.append(ref.state(cid)["pid"])
    for cid, pid in zip((first, second), pids):  # the one that made /runtime-ref goes first
        assert ref.cmd("delete", "--force", cid).returncode == 0
        reap(pid)
    for parent in glob.glob("/sys/fs/cgroup/*/runtime-ref") + glob.glob("/sys/fs/cgroup/runtime-ref"):
        assert [e for e in os.scandir(parent) if e.is_dir()], f"{parent} left empty"
