"""`runtime-ref run`: the container's view of itself, one property per test."""
import os

import pytest


def test_exit_status_is_the_process_status(ref):
    assert ref.run("exit 3").returncode == 3
    assert ref.run("true").returncode == 0


@pytest.mark.parametrize("sig,code", [("KILL", 137), ("TERM", 143)])
def test_killed_by_signal_is_128_plus_n(ref, sig, code):
    # pid 1 ignores signals it has no handler for, so a child kills itself
    assert ref.run(f"sh -c 'kill -{sig} $$'; exit $?").returncode == code


def test_process_is_pid_1(ref):
    done = ref.run("echo $$")
    assert done.stdout.strip() == "1", done.stderr


def test_hostname(ref):
    done = ref.run("hostname")
    assert done.stdout.strip() == "conformance"
    assert os.uname().nodename != "conformance"


def test_only_loopback(ref):
    done = ref.run("ls /sys/class/net")
    assert done.stdout.split() == ["lo"], done.stdout + done.stderr


def test_bounding_set_is_docker_default(ref):
    done = ref.run("grep CapBnd /proc/self/status")
    assert done.stdout.split()[1] == "00000000a80425fb"


def test_no_new_privs(ref):
    assert "NoNewPrivs:\t1" in ref.run("cat /proc/self/status").stdout


def test_seccomp_denies_mount_even_with_cap_sys_admin(ref):
    def add_admin(cfg):
        for k in ("bounding", "effective", "permitted"):
            cfg["process"]["capabilities"][k].append("CAP_SYS_ADMIN")
    done = ref.run("mount -t tmpfs x /mnt", patch=add_admin)
    assert done.returncode != 0
    assert "permission denied" in done.stderr  # busybox's words for EPERM
    assert "Seccomp:\t2" in ref.run("cat /proc/self/status").stdout


def test_memory_limit_oom_kills(ref):
    def limit(cfg):
        cfg["linux"]["resources"]["memory"] = {"limit": 16 << 20, "swap": 16 << 20}
    # the shell's string grows until the cgroup's limit kills the process
    done = ref.run("x=0123456789abcdef; while true; do x=$x$x; done", patch=limit, timeout=60)
    assert done.returncode == 137


def test_pids_limit(ref):
    def limit(cfg):
        cfg["linux"]["resources"]["pids"] = {"limit": 5}
    done = ref.run("for i in 1 2 3 4 5 6 7 8; do sleep 5 & done 2>&1; echo done", patch=limit)
    assert "can't fork" in done.stdout + done.stderr or "Resource temporarily" in done.stdout + done.stderr


def test_masked_path_reads_empty(ref):
    done = ref.run("wc -c < /proc/timer_list; ls /sys/firmware | wc -l")
    assert done.stdout.split() == ["0", "0"], done.stderr


def test_readonly_proc_sys(ref):
    done = ref.run("echo 1 > /proc/sys/kernel/domainname")
    assert done.returncode != 0 and "Read-only file system" in done.stderr


def test_readonly_root(ref):
    def ro(cfg):
        cfg["root"]["readonly"] = True
    done = ref.run("touch /x", patch=ro)
    assert done.returncode != 0 and "Read-only file system" in done.stderr
    assert ref.run("touch /tmp/x", patch=ro).returncode == 0  # /tmp is its own tmpfs


def test_user_namespace_maps_root(ref, tmp_path):
    def userns(cfg):
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    done = ref.run("id -u; cat /proc/self/uid_map", patch=userns)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0", "100000", "65536"]


def test_env_cwd_user_umask(ref):
    def proc(cfg):
        cfg["process"]["env"].append("GREETING=hi")
        cfg["process"]["cwd"] = "/tmp/work"
        cfg["process"]["user"] = {"uid": 65534, "gid": 65534, "additionalGids": [5], "umask": 0o077}
    done = ref.run("echo $GREETING; pwd; id; umask", patch=proc)
    assert done.stdout.split("\n")[:2] == ["hi", "/tmp/work"]
    assert "uid=65534" in done.stdout and "groups=5" in done.stdout
    assert done.stdout.split()[-1] == "0077"


def test_rlimits(ref):
    assert ref.run("ulimit -n").stdout.strip() == "1024"


def test_sysctl_in_own_namespace(ref):
    def sysctl(cfg):
        cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    done = ref.run("cat /proc/sys/net/ipv4/ip_forward", patch=sysctl)
    assert done.stdout.strip() == "1", done.stderr


def test_cgroup_namespace(ref):
    def cgns(cfg):
        cfg["linux"]["namespaces"].append({"type": "cgroup"})
    done = ref.run("cat /proc/self/cgroup", patch=cgns)
    assert done.stdout and all(line.endswith(":/") for line in done.stdout.split()), done.stdout


def test_time_namespace_offsets(ref):
    def timens(cfg):
        cfg["linux"]["namespaces"].append({"type": "time"})
        cfg["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365, "nanosecs": 0}}
    done = ref.run("cut -d. -f1 /proc/uptime", patch=timens)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 86400 * 365, done.stderr


def test_hooks_get_state_on_stdin(ref, tmp_path):
    log = tmp_path / "hooks.log"

    def hooks(cfg):
        cfg["hooks"] = {k: [{"path": "/bin/sh", "args": ["sh", "-c", f"cat >> {log}; echo >> {log}"]}]
                        for k in ("prestart", "createRuntime", "poststart", "poststop")}
        cfg["annotations"] = {"org.example/key": "v"}
    assert ref.run("true", patch=hooks).returncode == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 4 and all('"org.example/key": "v"' in line or "org.example/key" in line for line in lines)


def test_user_namespace_with_python_under_root(ref):
    """Run as `python -m runtime_ref` with this interpreter (pyenv's lives under
    /root, which the container's mapped root may not read): the init must not
    need to import anything after it entered the user namespace."""
    import json
    import subprocess
    import sys
    cfg = json.loads(json.dumps(ref.config))
    cfg["process"]["args"] = ["id", "-u"]
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    cid = ref.new_id()
    ref.write_config(cfg, cid)
    env = dict(os.environ, PYTHONPATH=str(ref.tmp.parents[0] / "none") + ":" + os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    done = subprocess.run([sys.executable, "-m", "runtime_ref", "--root", str(ref.root), "run",
                           "--bundle", str(ref.bundle), cid], capture_output=True, text=True,
                          env=env, stdin=subprocess.DEVNULL, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr


def test_missing_cwd_under_a_read_only_root(ref):
    """Regression (issue 16, bug 4): the cwd was made after the root went read-only (EROFS),
    and the error named the wrong step ("rlimits")."""
    def ro_missing_cwd(cfg):
        cfg["root"]["readonly"] = True
        cfg["process"]["cwd"] = "/made/for/the/process"
    done = ref.run("pwd; touch x 2>&1 | grep -c Read-only", patch=ro_missing_cwd)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["/made/for/the/process", "1"]
    assert (ref.bundle / "rootfs" / "made" / "for" / "the" / "process").is_dir()


def test_an_init_error_names_its_step(ref):
    def cwd_is_a_file(cfg):
        cfg["process"]["cwd"] = "/etc/passwd/below"
    done = ref.run("true", patch=cwd_is_a_file)
    assert done.returncode == 1 and "container init (cwd):" in done.stderr, done.stderr


def test_stdio_switch_hands_regular_files_to_nobody(ref, tmp_path):
    """The control of stdio-ownership-unchanged: plays gVisor's runsc (fchown to its sandbox user)."""
    out = tmp_path / "out"
    with open(out, "w") as f:
        ref.run("echo hi", stdout=f, stderr=f)
    assert out.stat().st_uid == 0
    with open(out, "w") as f:
        ref.run("echo hi", stdout=f, stderr=f, disable="stdio")
    assert (out.stat().st_uid, out.stat().st_gid) == (65534, 65534)
