"""runtime-ref's mounts, devices, sysctls and namespaces by path, and the switches that break each.

As in test_switches.py, each switch case runs one container without and one
with the switch and reads one fact that must differ.  Nothing here is mocked:
the mounts, nodes and namespaces are the kernel's.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

MS_SHARED, MNT_DETACH = 1 << 20, 2


def _sysctl(cfg):
    cfg["linux"]["sysctl"] = {"kernel.msgmax": "12345"}


def _shared_root(cfg):
    cfg["linux"]["rootfsPropagation"] = "shared"


def _tmpfs_ro(cfg):
    cfg["mounts"].append({"destination": "/m", "type": "tmpfs", "source": "tmpfs", "options": ["ro", "size=16k"]})


def _nested(cfg):
    cfg["mounts"] += [{"destination": "/run", "type": "tmpfs", "source": "tmpfs"},
                      {"destination": "/run/lock", "type": "tmpfs", "source": "tmpfs"}]


def _rbind_sys(cfg):
    cfg["mounts"].append({"destination": "/hostsys", "type": "bind", "source": "/sys", "options": ["rbind", "ro"]})


def _device(cfg):
    cfg["linux"]["devices"] = [{"path": "/dev/probe", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600}]


def _no_pid_ns(cfg):
    cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != "pid"]


def _private_root(cfg):
    cfg["linux"]["rootfsPropagation"] = "private"


# switch -> (shell run inside, config patch, check without switch, check with it)
CASES = {
    "rootfs-shared": ("awk '$5 == \"/\" {print $7}' /proc/self/mountinfo", _private_root,
                      lambda o: o.strip() == "-", lambda o: o.startswith("shared:")),
    "sysctl": ("cat /proc/sys/kernel/msgmax", _sysctl, lambda o: o.strip() == "12345",
               lambda o: o.strip() != "12345"),
    "rootfs-propagation": ("awk '$5 == \"/\" {print $7}' /proc/self/mountinfo", _shared_root,
                           lambda o: o.startswith("shared:"), lambda o: o.strip() == "-"),
    "mount-options": ("awk '$5 == \"/m\" {print $6}' /proc/self/mountinfo", _tmpfs_ro,
                      lambda o: o.startswith("ro,"), lambda o: o.startswith("rw,")),
    "mount-order": ("l=$(stat -c %d /run/lock) && r=$(stat -c %d /run) && [ $l != $r ] && echo visible; "
                    "awk '$5 ~ /^\\/run/ {print $5}' /proc/self/mountinfo",
                    _nested, lambda o: o.split() == ["visible", "/run", "/run/lock"],
                    lambda o: o.split() == ["/run/lock", "/run"]),
    "rbind": ("grep -c ' /hostsys/fs/cgroup ' /proc/self/mountinfo", _rbind_sys, lambda o: int(o) >= 1,
              lambda o: o.strip() == "0"),
    "device-nodes": ("stat -c %F /dev/probe", _device, lambda o: o.strip() == "character special file",
                     lambda o: o.strip() == ""),
    "force-namespaces": ("echo $$", _no_pid_ns, lambda o: o.strip() != "1", lambda o: o.strip() == "1"),
}


@pytest.mark.parametrize("switch", sorted(CASES))
def test_switch_changes_what_the_container_sees(ref, switch):
    shell, patch, normal, switched = CASES[switch]
    on = ref.run(shell, patch=patch)
    off = ref.run(shell, patch=patch, disable=switch)
    assert normal(on.stdout), f"without --disable {switch}: {on.stdout!r} {on.stderr!r}"
    assert switched(off.stdout), f"with --disable {switch}: {off.stdout!r} {off.stderr!r}"


def test_a_host_wide_sysctl_is_refused_unless_switched_off(ref):
    value = Path("/proc/sys/kernel/printk_ratelimit").read_text().strip()  # the host's own: nothing changes

    def host_wide(cfg):
        cfg["linux"]["sysctl"] = {"kernel.printk_ratelimit": value}
    refused = ref.run("true", patch=host_wide)
    assert refused.returncode != 0 and "not namespaced" in refused.stderr
    assert ref.run("true", patch=host_wide, disable="sysctl").returncode == 0


@pytest.fixture
def shared_tmpfs(tmp_path):
    """A tmpfs with shared propagation, detached afterwards with whatever propagated under it."""
    libc = ctypes.CDLL(None, use_errno=True)
    path = tmp_path / "shared"
    path.mkdir()
    assert libc.mount(b"probe", str(path).encode(), b"tmpfs", 0, b"size=16k") == 0
    try:
        assert libc.mount(None, str(path).encode(), None, MS_SHARED, None) == 0
        yield path
    finally:
        libc.umount2(str(path).encode(), MNT_DETACH)


def test_mount_propagation_switch_leaves_a_bind_as_the_root_made_it(ref, shared_tmpfs):
    """rprivate on the bind of a shared mount cuts it off; without it, the rslave root leaves it a slave."""
    def bind(cfg):
        cfg["mounts"].append({"destination": "/canary", "type": "bind", "source": str(shared_tmpfs),
                              "options": ["rbind", "rprivate"]})
    shell = "awk '$5 == \"/canary\" {print $7}' /proc/self/mountinfo"
    assert ref.run(shell, patch=bind).stdout.strip() == "-"
    assert ref.run(shell, patch=bind, disable="mount-propagation").stdout.startswith("master:")


def test_bind_nondir_switch_copies_a_fifo_into_a_regular_file(ref, tmp_path):
    os.mkfifo(tmp_path / "fifo")

    def bind(cfg):
        cfg["mounts"].append({"destination": "/fifo", "type": "bind", "source": str(tmp_path / "fifo"),
                              "options": ["bind"]})
    assert ref.run("stat -c %F /fifo", patch=bind).stdout.strip() == "fifo"
    assert ref.run("stat -c %F /fifo", patch=bind, disable="bind-nondir").stdout.strip() == "regular empty file"


def test_securejoin_switch_follows_a_rootfs_symlink_out_of_the_root(ref):
    """Resolved inside the root, ../../escape lands at /escape; followed on the host, in the bundle."""
    (ref.bundle / "rootfs" / "etc" / "escape").symlink_to("../../escape-target")

    def mount(cfg):
        cfg["mounts"].append({"destination": "/etc/escape", "type": "tmpfs", "source": "tmpfs"})
    shell = "grep -c ' /escape-target ' /proc/self/mountinfo"
    assert ref.run(shell, patch=mount).stdout.strip() == "1"
    assert not (ref.bundle / "escape-target").exists()
    assert ref.run(shell, patch=mount, disable="securejoin").stdout.strip() == "0"
    assert (ref.bundle / "escape-target").is_dir()


@pytest.mark.skipif(not os.path.exists("/sys/dev/char/10:237"), reason="the host has no loop-control (10:237)")
def test_device_rules_switch_leaves_only_deny_all_and_the_defaults(ref):
    def allow(cfg):
        cfg["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 10, "minor": 237,
                                                     "access": "r"})
    shell = "mknod /dev/lc c 10 237 && ( : < /dev/lc ) && echo read-ok"
    assert "read-ok" in ref.run(shell, patch=allow).stdout
    assert "read-ok" not in ref.run(shell, patch=allow, disable="device-rules").stdout


def test_a_namespace_path_of_another_type_is_refused_unless_switched_off(ref):
    def wrong(cfg):
        cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != "network"]
        cfg["linux"]["namespaces"].append({"type": "network", "path": "/proc/self/ns/ipc"})
    refused = ref.run("true", patch=wrong)
    assert refused.returncode != 0 and "names a namespace of type ipc" in refused.stderr
    assert ref.run("true", patch=wrong, disable="ns-path-type").returncode == 0


def test_a_tmpfs_without_mode_keeps_its_mountpoint_s_unless_switched_off(ref):
    (ref.bundle / "rootfs" / "m2").mkdir(mode=0o712)
    (ref.bundle / "rootfs" / "m2").chmod(0o712)

    def tmpfs(cfg):
        cfg["mounts"].append({"destination": "/m2", "type": "tmpfs", "source": "tmpfs", "options": ["ro"]})
    assert ref.run("stat -c %a /m2", patch=tmpfs).stdout.strip() == "712"
    assert ref.run("stat -c %a /m2", patch=tmpfs, disable="tmpfs-mode").stdout.strip() == "1777"


def _userns_without_netns(cfg):
    cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != "network"]
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def test_sysfs_in_a_userns_without_netns_is_the_host_s_bound_read_only(ref):
    shell = "awk '$5 == \"/sys\" {print $6}' /proc/self/mountinfo; ls /sys/class/net"
    bound = ref.run(shell, patch=_userns_without_netns).stdout.split()
    assert bound[0].startswith("ro,") and "lo" in bound[1:], bound
    left = ref.run(shell, patch=_userns_without_netns, disable="sysfs-fallback")
    assert left.returncode != 0 and left.stdout.strip() == "", (left.stdout, left.stderr)


def test_implicit_mounts_switch_mounts_proc_unasked(ref):
    def minimal(cfg):
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] not in ("/proc", "/sys")]
        cfg["linux"]["maskedPaths"] = cfg["linux"]["readonlyPaths"] = []
    assert ref.run("ls -A /proc | wc -l", patch=minimal).stdout.strip() == "0"
    assert int(ref.run("ls -A /proc | wc -l", patch=minimal, disable="implicit-mounts").stdout) > 0


def test_a_fifo_in_linux_devices_is_made_without_a_cgroup_rule(ref):
    def fifo(cfg):
        cfg["linux"]["devices"] = [{"path": "/dev/pipe", "type": "p", "fileMode": 0o640, "uid": 1, "gid": 2}]
    assert ref.run("stat -c '%F %a %u:%g' /dev/pipe", patch=fifo).stdout.strip() == "fifo 640 1:2"
