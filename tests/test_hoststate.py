"""The host's side of a property (conformance/host/hoststate.py), without a runtime.

Mount tables are written out; the cwd walk runs on a real child process
that chroots (we are root); the network views are read with a fake /sys.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from conformance.host import hoststate

ROOTFS = "/tmp/b/cf-1/rootfs"
HOST = """\
20 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw
21 20 0:5 / /dev rw - devtmpfs udev rw
22 20 0:30 / /tmp/b/cf-1/rootfs rw - overlay overlay rw,lowerdir=/x
23 20 0:31 / /sys rw - sysfs sysfs rw
"""


def _line(n: int, device: str, root: str, where: str, fstype: str) -> str:
    return f"{n} 1 {device} {root} {where} rw,relatime - {fstype} src rw"


def _undeclared(*lines: str, config: dict | None = None) -> list[str]:
    found = hoststate.undeclared("\n".join(lines), HOST, config or {"mounts": []}, ROOTFS)
    return found.splitlines()


def test_the_root_new_file_systems_and_shared_pseudo_file_systems_are_declared():
    assert _undeclared(_line(1, "0:30", "/", "/", "overlay"),           # the rootfs overlay the host mounted
                       _line(2, "0:40", "/", "/proc", "proc"),
                       _line(3, "0:41", "/", "/dev", "tmpfs"),           # made for the container: no host path
                       _line(4, "0:31", "/", "/sys", "sysfs"),           # the host's sysfs (no net namespace)
                       _line(5, "0:5", "/null", "/proc/kcore", "devtmpfs")) == []  # a mask from the host's /dev/null


def test_a_bind_mount_of_any_host_directory_not_in_config_json_is_named():
    found = _undeclared(_line(1, "0:30", "/", "/", "overlay"), _line(2, "254:1", "/tmp/b/cf-1", "/run/x", "ext4"),
                        _line(3, "254:1", "/home/someone", "/data", "ext4"))
    assert found == ["/run/x: host path /tmp/b/cf-1 (ext4), not in config.json",
                     "/data: host path /home/someone (ext4), not in config.json"]


def test_a_bind_mount_config_json_names_is_declared_and_so_is_a_path_under_the_root():
    config = {"mounts": [{"destination": "/data", "type": "bind", "source": "/home/someone", "options": ["rbind"]}]}
    assert _undeclared(_line(1, "254:1", "/home/someone/sub", "/data/sub", "ext4"),
                       _line(2, "254:1", ROOTFS + "/etc", "/etc", "ext4"), config=config) == []


def test_mountinfo_escapes_are_read():
    (mount,) = [hoststate.Mount(_line(1, "254:1", "/a\\040b", "/x\\040y", "ext4"))]
    assert (mount.root, mount.mountpoint) == ("/a b", "/x y")


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
@pytest.mark.parametrize("inside", [True, False])
def test_a_cwd_is_under_the_root_only_when_the_walk_up_meets_it(tmp_path, inside):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    pid = os.fork()
    if pid == 0:  # the child: chroot, and keep its cwd inside the new root or outside it
        try:
            os.chdir(root / "etc" if inside else tmp_path)
            os.chroot(root)
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{pid}/root") != str(root) and time.monotonic() < deadline:
            time.sleep(0.01)
        view = hoststate.link_view(pid, "cwd")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert view.endswith(f"under the container's root: {'yes' if inside else 'no'}"), view


def test_other_runs_canaries_are_left_out_of_the_host_s_links(monkeypatch):
    names = ["lo", "eth0", "cfk0012340abc", "cfk00beefdead"]
    monkeypatch.setattr(hoststate.os, "listdir", lambda path: names)
    monkeypatch.setattr(hoststate, "_read", lambda path: str(names.index(path.split("/")[4]) + 1))
    assert hoststate.net_state("links", {"net_canary_link": "cfk00beefdead"}).splitlines() == \
        ["1: lo", "2: eth0", "4: cfk00beefdead"]


def test_the_environment_shows_values_only_for_what_the_config_sets(tmp_path):
    child = os.fork()
    if child == 0:
        os.execve("/bin/sleep", ["sleep", "30"], {"FROM_CONFIG": "yes", "SECRET_TOKEN": "hunter2"})
    try:
        time.sleep(0.2)
        view = hoststate.environ_view(child, {"process": {"env": ["FROM_CONFIG=yes"]}})
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
    assert view.splitlines() == ["FROM_CONFIG=yes", "SECRET_TOKEN=<not in config.json: value withheld>"]
    assert "hunter2" not in view


def test_a_script_runtime_is_hashed_with_its_interpreter(tmp_path):
    script = tmp_path / "runtime"
    script.write_text("#!/bin/sh -e\nexit 0\n")
    lines = hoststate.runtime_digest(str(script)).splitlines()
    assert [line.split("  ")[1] for line in lines] == [str(script), os.path.realpath("/bin/sh")]
    assert all(len(line.split("  ")[0]) == 64 for line in lines)
    assert hoststate.before([("runtime_binary_unchanged", "true")], {}, str(script))["runtime_digest"] == "\n".join(lines)


def test_before_reads_the_host_s_routes(tmp_path):
    if not Path("/proc/net/route").exists():
        pytest.skip("no /proc/net/route")
    values = hoststate.before([("host_unchanged", "routes")], {}, "/bin/sh")
    assert set(values) == {"host_routes"}
    assert values["host_routes"] == hoststate.net_state("routes", {})
