"""`runtime-ref exec`: a second process inside a running container."""
from __future__ import annotations

import json

from conftest import reap


def _running(ref):
    cid = ref.create(["sleep", "91"])
    ref.cmd("start", cid)
    return cid


def test_exec_joins_namespaces_and_settings(ref):
    cid = _running(ref)
    done = ref.cmd("exec", cid, "sh", "-c",
                   "hostname; tr '\\0' ' ' < /proc/1/cmdline; echo; grep -E 'CapBnd|NoNewPrivs|Seccomp:' /proc/self/status; ls /sys/class/net")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == "conformance"
    assert lines[1] == "sleep 91 "  # pid 1 is the init: same pid namespace
    assert "00000000a80425fb" in lines[2] and lines[3].endswith("1") and lines[4].endswith("2")
    assert lines[5] == "lo"


def test_exec_exit_status_and_options(ref):
    cid = _running(ref)
    assert ref.cmd("exec", cid, "sh", "-c", "exit 5").returncode == 5
    done = ref.cmd("exec", "--env", "A=b", "--cwd", "/tmp", "--user", "65534:65534", cid,
                   "sh", "-c", "echo $A; pwd; id -u")
    assert done.stdout.split() == ["b", "/tmp", "65534"], done.stderr


def test_exec_is_in_the_container_cgroup(ref):
    cid = _running(ref)
    done = ref.cmd("exec", cid, "cat", "/proc/self/cgroup")
    assert f"pids:/{cid}" in done.stdout


def test_exec_refused_when_not_running(ref):
    cid = ref.create(["true"])
    done = ref.cmd("exec", cid, "true")
    assert done.returncode != 0 and "state created" in done.stderr
    pid = ref.state(cid)["pid"]
    ref.cmd("start", cid)
    reap(pid)
    assert "state stopped" in ref.cmd("exec", cid, "true").stderr


def test_exec_unknown_command(ref):
    cid = _running(ref)
    done = ref.cmd("exec", cid, "no-such-cmd")
    assert done.returncode != 0 and "executable file not found" in done.stderr


def test_exec_makes_its_process_like_the_init(ref):
    """The init and exec share process.finish: an exec'd process gets the config's
    oomScoreAdj and a missing cwd is created, as the init does (exec once skipped both)."""
    with open("/proc/self/oom_score_adj") as f:
        ours = int(f.read())
    cfg = json.loads(json.dumps(ref.config))
    cfg["process"]["oomScoreAdj"] = ours + 123  # raising it needs no privilege
    cfg["process"]["cwd"] = "/made/by/the/init"
    cid = ref.create(["sleep", "91"], config=cfg)
    ref.cmd("start", cid)
    done = ref.cmd("exec", cid, "sh", "-c", "cat /proc/1/oom_score_adj /proc/self/oom_score_adj; pwd")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(ours + 123), str(ours + 123), "/made/by/the/init"]
    done = ref.cmd("exec", "--cwd", "/made/by/exec", "--user", "65534:65534", cid,
                   "sh", "-c", "pwd; stat -c %u /made/by/exec; id -u")
    assert done.returncode == 0, done.stderr
    # made before the user changes, by the container's root, like the init's
    assert done.stdout.split() == ["/made/by/exec", "0", "65534"]


def test_exec_cap_adds_one_capability_to_bounding_effective_permitted(ref):
    cid = _running(ref)
    done = ref.cmd("exec", "--cap", "CAP_SYS_NICE", cid, "grep", "^Cap", "/proc/self/status")
    caps = dict(line.split(":\t") for line in done.stdout.splitlines())
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapBnd"] == "00000000a88425fb", done.stderr
    assert caps["CapInh"] == caps["CapAmb"] == "0000000000000000"  # CVE-2022-29162: never inheritable
    assert ref.cmd("exec", "--cap", "CAP_BOGUS", cid, "true").returncode != 0


def _exec_switched(ref, switch, *argv):
    cid = ref.create(["sleep", "91"], disable=switch)
    ref.cmd("start", cid)
    return ref.cmd("exec", cid, *argv)


def test_switch_exec_namespaces_leaves_the_exec_in_the_runtime_s_namespaces(ref):
    import socket
    assert _exec_switched(ref, None, "hostname").stdout.strip() == "conformance"
    assert _exec_switched(ref, "exec-namespaces", "hostname").stdout.strip() == socket.gethostname()


def test_switch_exec_cgroup_leaves_the_exec_in_the_runtime_s_cgroups(ref):
    done = _exec_switched(ref, "exec-cgroup", "cat", "/proc/self/cgroup")
    assert ref.tag not in done.stdout, done.stdout


def test_switch_exec_confine_leaves_the_exec_its_privileges(ref):
    done = _exec_switched(ref, "exec-confine", "grep", "-E", "CapBnd|NoNewPrivs|Seccomp:", "/proc/self/status")
    lines = done.stdout.split()
    assert lines[1] != "00000000a80425fb" and lines[3] == "0" and lines[5] == "0", done.stdout


def test_switch_exec_opts_ignores_exec_s_flags(ref):
    cid = ref.create(["sleep", "91"], disable="exec-opts")
    ref.cmd("start", cid)
    done = ref.cmd("exec", "--env", "A=b", "--cwd", "/tmp", "--user", "65534:65534", cid,
                   "sh", "-c", "echo A=$A; pwd; id -u")
    assert done.stdout.split() == ["A=", "/", "0"], done.stderr


def test_switch_exec_status_says_0_whatever_happened(ref):
    cid = ref.create(["sleep", "91"], disable="exec-status")
    ref.cmd("start", cid)
    assert ref.cmd("exec", cid, "sh", "-c", "exit 42").returncode == 0
    assert ref.cmd("exec", cid, "/not.here").returncode == 0
