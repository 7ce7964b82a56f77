"""Every switch (negative control) visibly turns off the one primitive it names.

Each case runs the same container twice, without and with the switch, and
reads one fact: the two answers must differ in the expected way.  This is
what lets a conformance scenario prove that it can fail.
"""
import json
import os
import subprocess

import pytest

from runtime_ref.spec import SWITCHES


def host_capbnd():
    with open("/proc/self/status") as f:
        return next(line.split()[1] for line in f if line.startswith("CapBnd"))


def host_ns(kind):
    return os.readlink(f"/proc/self/ns/{kind}")


def _ns_case(kind, patch=None):
    """Container prints its namespace link; normal != host, switched == host."""
    return (f"readlink /proc/self/ns/{kind}", patch,
            lambda out: out.strip() != host_ns(kind),
            lambda out: out.strip() == host_ns(kind))


def _userns(cfg):
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def _cgroupns(cfg):
    cfg["linux"]["namespaces"].append({"type": "cgroup"})


def _timens(cfg):
    cfg["linux"]["namespaces"].append({"type": "time"})
    cfg["linux"]["timeOffsets"] = {"boottime": {"secs": 10 ** 8, "nanosecs": 0}}


def _memory(cfg):
    cfg["linux"]["resources"]["memory"] = {"limit": 16 << 20, "swap": 16 << 20}


def _pids(cfg):
    cfg["linux"]["resources"]["pids"] = {"limit": 4}


def _ro_root(cfg):
    cfg["root"]["readonly"] = True


def _nofile(cfg):
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 77, "hard": 77}]


def _umask(cfg):
    cfg["process"]["user"]["umask"] = 0o077


def _cwd(cfg):
    cfg["process"]["cwd"] = "/etc"


def _env(cfg):
    cfg["process"]["env"] = list(cfg["process"].get("env") or []) + ["SWITCH_PROBE=from-config"]


# switch -> (shell run inside, config patch, check without switch, check with it)
RUN_CASES = {
    "dev-symlinks": ("readlink /dev/fd; readlink /dev/ptmx; true", None, lambda o: o.split() == ["/proc/self/fd", "pts/ptmx"],
                     lambda o: o.strip() == ""),
    "pid": ("echo $$", None, lambda o: o.strip() == "1", lambda o: o.strip() != "1"),
    "net": _ns_case("net"),
    "mnt": _ns_case("mnt"),
    "uts": ("hostname", None, lambda o: o.strip() == "conformance",
            lambda o: o.strip() == os.uname().nodename),
    "ipc": _ns_case("ipc"),
    "user": ("cat /proc/self/uid_map", _userns, lambda o: o.split()[:2] == ["0", "100000"],
             lambda o: o.split()[:2] == ["0", "0"]),
    "cgroupns": ("cat /proc/self/cgroup", _cgroupns, lambda o: "cf-" not in o, lambda o: "cf-" in o),
    "time": ("cut -d. -f1 /proc/uptime", _timens, lambda o: int(o) > 10 ** 8, lambda o: int(o) < 10 ** 8),
    "memory": ("x=0123456789abcdef; i=0; while [ $i -lt 21 ]; do x=$x$x; i=$((i+1)); done; echo survived",
               _memory, lambda o: "survived" not in o, lambda o: "survived" in o),
    "pids": ("n=0; for i in 1 2 3 4 5 6; do sleep 3 & n=$((n+1)); done 2>/dev/null; echo $n forks; kill $(jobs -p) 2>/dev/null",
             _pids, lambda o: "6 forks" not in o, lambda o: "6 forks" in o),
    "caps": ("grep CapBnd /proc/self/status", None, lambda o: o.split()[1] == "00000000a80425fb",
             lambda o: o.split()[1] == host_capbnd()),
    "nnp": ("grep NoNewPrivs /proc/self/status", None, lambda o: o.split()[1] == "1",
            lambda o: o.split()[1] == "0"),
    "seccomp": ("grep Seccomp: /proc/self/status", None, lambda o: o.split()[1] == "2",
                lambda o: o.split()[1] == "0"),
    "masked-paths": ("wc -c < /proc/timer_list", None, lambda o: int(o) == 0, lambda o: int(o) > 0),
    "readonly-paths": ("echo x > /proc/sys/kernel/domainname && echo wrote", None,
                       lambda o: "wrote" not in o, lambda o: "wrote" in o),
    "readonly-rootfs": ("touch /x && echo wrote", _ro_root, lambda o: "wrote" not in o, lambda o: "wrote" in o),
    "rlimits": ("ulimit -n", _nofile, lambda o: o.strip() == "77", lambda o: o.strip() != "77"),
    "devices": ("test -b /dev/vda && echo host-disk-visible", None,
                lambda o: "visible" not in o, lambda o: "visible" in o),
    "umask": ("umask", _umask, lambda o: o.strip() == "0077", lambda o: o.strip() == "0022"),
    "cwd": ("pwd", _cwd, lambda o: o.strip() == "/etc", lambda o: o.strip() == "/"),
    "env": ("echo probe=$SWITCH_PROBE; env | grep -c '^PYTEST_CURRENT_TEST=' || true", _env,
            lambda o: o.split() == ["probe=from-config", "0"], lambda o: o.split() == ["probe=", "1"]),
    "declared-mounts": ("grep -c ' /run/undeclared ' /proc/self/mountinfo; test -f /run/undeclared/config.json "
                        "&& echo bundle-visible", None, lambda o: o.split() == ["0"],
                        lambda o: o.split() == ["1", "bundle-visible"]),
}


@pytest.mark.parametrize("switch", sorted(RUN_CASES))
def test_switch_changes_what_the_container_sees(ref, switch):
    shell, patch, normal, switched = RUN_CASES[switch]
    on = ref.run(shell, patch=patch, timeout=60)
    off = ref.run(shell, patch=patch, disable=switch, timeout=60)
    assert normal(on.stdout), f"without --disable {switch}: {on.stdout!r} {on.stderr!r}"
    assert switched(off.stdout), f"with --disable {switch}: {off.stdout!r} {off.stderr!r}"


def _host_cgroup_file(ref, switch, patch, path):
    """Create a container, read one file of its cgroup from the host, delete it."""
    cfg = json.loads(json.dumps(ref.config))
    patch(cfg)
    cid = ref.create(["sleep", "91"], config=cfg, disable=switch)
    try:
        with open(path.format(cid=cid)) as f:
            return f.read()
    finally:
        ref.cmd("delete", "--force", cid)


def _cpu(cfg):
    cfg["linux"]["resources"]["cpu"] = {"quota": 50000, "period": 100000, "shares": 512}


def _io(cfg):
    major, minor = open("/sys/block/vda/dev").read().split(":") if os.path.exists("/sys/block/vda") else (1, 0)
    cfg["linux"]["resources"]["blockIO"] = {
        "throttleReadBpsDevice": [{"major": int(major), "minor": int(minor), "rate": 1048576}]}


HOST_CASES = {
    "cpu": (_cpu, "/sys/fs/cgroup/cpu/{cid}/cpu.cfs_quota_us", lambda v: v.strip() == "50000",
            lambda v: v.strip() == "-1"),
    "io": (_io, "/sys/fs/cgroup/blkio/{cid}/blkio.throttle.read_bps_device",
           lambda v: "1048576" in v, lambda v: v.strip() == ""),
    "devices": (lambda cfg: None, "/sys/fs/cgroup/devices/{cid}/devices.list",
                lambda v: "a *:* rwm" not in v, lambda v: v.strip() == "a *:* rwm"),
}


@pytest.mark.skipif(not os.path.isdir("/sys/fs/cgroup/cpu"), reason="host has no cgroup v1 cpu hierarchy")
@pytest.mark.parametrize("switch", sorted(HOST_CASES))
def test_switch_changes_the_cgroup(ref, switch):
    patch, path, normal, switched = HOST_CASES[switch]
    assert normal(_host_cgroup_file(ref, None, patch, path))
    assert switched(_host_cgroup_file(ref, switch, patch, path))


@pytest.mark.parametrize("switch", ["pivot_root", "mnt"])
def test_without_pivot_root_the_host_root_stays_in_the_mount_namespace(ref, switch):
    """After pivot_root the old root is unmounted: the namespace's root is the rootfs.
    With chroot the host's tree is still there, one escape away."""
    def host_tree_reachable(disable):
        cid = ref.create(["sleep", "91"], disable=disable)
        pid = ref.state(cid)["pid"]
        try:
            done = subprocess.run(["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", "/bin/busybox",
                                   "test", "-e", str(ref.bundle / "config.json")])
            return done.returncode == 0
        finally:
            ref.cmd("delete", "--force", cid)
    assert not host_tree_reachable(None)
    assert host_tree_reachable(switch)


def test_hooks_switch(ref, tmp_path):
    mark = tmp_path / "hook-ran"

    def hook(cfg):
        cfg["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {mark}"]}]}
    assert ref.run("true", patch=hook, disable="hooks").returncode == 0
    assert not mark.exists()
    assert ref.run("true", patch=hook).returncode == 0
    assert mark.exists()


def test_cwd_check_switch(ref):
    """CVE-2024-21626: a cwd through a descriptor the runtime holds (create keeps
    one open on the state directory until exec; which number it gets can vary
    between runs, so fds 5 to 9 are tried) is refused; with the check off the
    process starts outside its root through at least one of them."""
    from conftest import reap

    escaped = []
    for fd in range(5, 10):
        cfg = json.loads(json.dumps(ref.config))
        cfg["process"]["cwd"] = f"/proc/self/fd/{fd}"
        with pytest.raises(AssertionError):  # refused: by the check, or as no directory at all
            ref.create(["sh", "-c", "pwd"], config=cfg)
        try:
            cid = ref.create(["sh", "-c", "pwd; ls"], config=cfg, disable="cwd-check")
        except AssertionError:
            continue  # that fd was not a directory this time
        pid = ref.state(cid)["pid"]
        ref.cmd("start", cid)
        reap(pid)
        out = ref.output(cid)
        if "state.json" in out or "(unreachable)" in out:
            escaped.append(fd)
    assert escaped, "with cwd-check off no leaked descriptor led outside the root"


def test_overlay_switch(ref):
    """Writes reach the bundle's rootfs (an image overlay's upper dir, in an engine);
    with the switch they go to a private layer and vanish."""
    assert ref.run("echo one > /etc/written", disable="overlay").returncode == 0
    assert not (ref.bundle / "rootfs" / "etc" / "written").exists()
    assert ref.run("echo two > /etc/written").returncode == 0
    assert (ref.bundle / "rootfs" / "etc" / "written").read_text() == "two\n"


def test_kill_switch(ref):
    from conftest import reap
    cid = ref.create(["sleep", "91"])
    pid = ref.state(cid)["pid"]
    ref.cmd("start", cid)
    assert ref.cmd("kill", cid, "KILL", disable="kill").returncode == 0
    assert ref.state(cid)["status"] == "running"
    assert ref.cmd("kill", cid, "KILL").returncode == 0
    assert reap(pid) == 137


def test_exec_fifo_switch(ref):
    import time
    cid = ref.create(["sh", "-c", "echo early"], disable="exec-fifo")
    deadline = time.monotonic() + 10
    while ref.output(cid) == "" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ref.output(cid) == "early\n"  # ran without start
    cid = ref.create(["sh", "-c", "echo late"])
    assert ref.output(cid) == "" and ref.state(cid)["status"] == "created"


def test_state_switch(ref):
    cid = ref.create(["sleep", "91"])
    ref.cmd("start", cid)
    assert ref.state(cid)["status"] == "running"
    frozen = ref.cmd("state", cid, disable="state")
    assert json.loads(frozen.stdout)["status"] == "created"
    assert ref.cmd("state", "never-made").returncode != 0
    assert json.loads(ref.cmd("state", "never-made", disable="state").stdout)["status"] == "created"


#: switches whose tests live beside the behaviour they break (the file says where)
ELSEWHERE = {
    "close-fds": "test_descriptors.py", "session": "test_descriptors.py", "preserve-fds": "test_descriptors.py",
    "update": "test_update.py",
    "cgroup-view": "test_cgroup_view.py", "default-cgroup": "test_cgroup_view.py",
    "hook-env": "test_hooks.py", "poststart-warning": "test_hooks.py",
    "freezer": "test_pause.py", "thaw": "test_pause.py", "ps": "test_pause.py",
    "cli-checks": "test_cli.py", "stdio": "test_run.py",
    "delete-check": "test_lifecycle_checks.py", "start-check": "test_lifecycle_checks.py",
    "kill-check": "test_lifecycle_checks.py", "state-fields": "test_lifecycle_checks.py",
    "pid-file": "test_lifecycle_checks.py", "reread-config": "test_lifecycle_checks.py",
    "run-cleanup": "test_lifecycle_checks.py", "id-check": "test_lifecycle_checks.py",
    "features": "test_lifecycle_checks.py", "log-format": "test_lifecycle_checks.py",
    "validate": "test_config.py", "extensions": "test_config.py",
    "hook-order": "test_hooks.py", "hook-state": "test_hooks.py", "hook-sigpipe": "test_hooks.py", "hook-namespace": "test_hooks.py",
    "hook-args": "test_hooks.py", "hook-timeout": "test_hooks.py", "poststop-warning": "test_hooks.py",
    "cgroups-path": "test_cgroup_switches.py", "cgroup-cleanup": "test_cgroup_switches.py",
    "cgroup-ownership": "test_cgroup_switches.py",
    "unified": "test_cgroup_switches.py", "hugetlb": "test_cgroup_switches.py",
    **{s: "test_mounts_and_namespaces.py" for s in (
        "sysctl", "rootfs-propagation", "rootfs-shared", "mount-propagation", "mount-options", "mount-order", "rbind",
        "bind-nondir", "tmpfs-mode", "sysfs-fallback", "implicit-mounts", "securejoin", "device-nodes", "device-rules", "ns-path-type", "force-namespaces")},
    "oom-score-adj": "test_attributes.py", "scheduler": "test_attributes.py", "ioprio": "test_attributes.py",
    "personality": "test_attributes.py", "mempolicy": "test_attributes.py", "cpu-affinity": "test_attributes.py",
    "home": "test_attributes.py", "args-lookup": "test_attributes.py",
    "exec-namespaces": "test_exec.py", "exec-cgroup": "test_exec.py", "exec-confine": "test_exec.py",
    "exec-opts": "test_exec.py", "exec-status": "test_exec.py",
    "apparmor": "test_privilege.py", "selinux": "test_privilege.py",
    "terminal": "test_terminal.py", "console-size": "test_terminal.py",
    "exec-terminal": "test_terminal.py",
    "ambient": "test_privilege.py", "cap-names": "test_privilege.py", "force-nnp": "test_privilege.py", "seccomp-args": "test_privilege.py",
}


def test_every_switch_is_tested():
    from pathlib import Path
    here = Path(__file__).parent
    for switch, where in ELSEWHERE.items():
        assert f'"{switch}"' in (here / where).read_text(), f"{where} does not test switch {switch}"
    covered = set(RUN_CASES) | set(HOST_CASES) | set(ELSEWHERE) | {"pivot_root", "hooks", "cwd-check",
                                                                    "overlay", "kill", "exec-fifo", "state"}
    assert covered == set(SWITCHES)


def test_switches_from_the_environment(ref):
    done = ref.run("echo $$", env={"RUNTIME_REF_DISABLE": "pid,seccomp"})
    assert done.stdout.strip() != "1"


def test_unknown_switch_is_refused(ref):
    done = ref.run("true", disable="pid,bogus")
    assert done.returncode != 0 and "unknown switch 'bogus'" in done.stderr
