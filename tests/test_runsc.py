"""gVisor's runsc as a column, and runtimes that leave daemons of their own behind.

runsc's container has no host process of its own: ``state`` names the
sandbox, and ``create`` leaves a sandbox and a gofer that are re-parented to
the harness.  Its cells must be verdicts with evidence, never harness errors,
and nothing may outlive the run.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, RUN_TAG, SUITE_ENV, run_suite, suite_command, write_scenarios

LIFECYCLE = {
    "uts.yaml": """
        id: hostname
        title: the configured hostname, and the host's is unchanged
        tags: [uts]
        control: [uts]
        patch: {hostname: in-gvisor}
        run: hostname; read _
        expect:
          exit: 0
          stdout: in-gvisor
          host: [{namespace_differs: uts}, {host_hostname_unchanged: true}]
        """,
    "exit.yaml": """
        id: exit-status
        title: the entrypoint's exit status comes back through create/start
        tags: [exit-code]
        control: [pid]
        run: read _; exit 7
        expect:
          exit: 7
          host: [{namespace_differs: mnt, when: created}]
        """,
    "run.yaml": """
        id: killed
        title: a signal death is 128+N through run
        tags: [exit-code]
        control: [pid]
        run: kill -KILL $$
        expect: {exit: 137}
        """,
}


@pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc is not installed (ci/setup.sh installs it)")
def test_runsc_cells_are_verdicts_and_its_sandboxes_leave_nothing(tmp_path, no_leftovers):
    sc = write_scenarios(tmp_path / "sc", LIFECYCLE)
    run = run_suite(sc, tmp_path / "out", "--runtime=runsc")
    assert run.returncode == 0, run.output[-3000:]
    # the namespaces hold, but they are the sandbox kernel's own: no process of the container is on the host
    assert run.verdicts() == {("hostname", "runsc"): "other-mechanism", ("exit-status", "runsc"): "other-mechanism",
                              ("killed", "runsc"): "pass"}
    assert "the container has no process on the host" in run.result("hostname", "runsc")["evidence"]
    runsc = run.matrix["runtimes"]["runsc"]
    assert "--platform=ptrace" in runsc["global_flags"] and "--network=none" in runsc["global_flags"]
    # detected, not known by name: the process `state` names is not running the entrypoint
    assert re.fullmatch(r"state pid \d+ runs /\S*runsc\S*, not the entrypoint /bin/busybox", runsc["sandboxed"])
    assert "sandboxed" in (tmp_path / "out" / "matrix.md").read_text()
    for mountpoint in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
        assert not list(Path(mountpoint).glob(f"cf-{RUN_TAG}-*")) if Path(mountpoint).is_dir() else True
    assert _processes_naming(f"oci-conformance-{RUN_TAG}") == {}, "a sandbox or gofer outlived the run"


HANGING_RUNTIME = """#!/bin/sh
# A runtime whose create starts a daemon in a session of its own (as runsc's
# sandbox is), then never returns.  The daemon names the state root.
root=$2
case "$3" in
  --version|"") echo "hanging version 0.1"; exit 0 ;;
  create) setsid "{python}" -c 'import time; time.sleep(91)' "--root=$root" </dev/null >/dev/null 2>&1 &
          exec sleep 91 ;;
  *) exit 0 ;;
esac
"""


def test_a_create_that_hangs_leaves_no_daemon_behind(tmp_path, no_leftovers):
    runtime = tmp_path / "bin" / "hanging"
    runtime.parent.mkdir()
    runtime.write_text(HANGING_RUNTIME.replace("{python}", sys.executable))
    runtime.chmod(0o755)
    sc = write_scenarios(tmp_path / "sc", {"t.yaml": """
        id: hangs-in-create
        title: create never returns
        tags: [lifecycle]
        control: [pid]
        timeout: 1
        run: "true"
        expect:
          exit: 0
          host: [{namespace_differs: pid, when: created}]
        """})
    run = run_suite(sc, tmp_path / "out", f"--runtime={runtime}")
    assert run.result("hangs-in-create", "hanging")["verdict"] == "error"
    assert "create did not return within 1s" in run.result("hangs-in-create", "hanging")["evidence"]
    assert _processes_naming(f"oci-conformance-{RUN_TAG}") == {}, "the daemon outlived the run"


def _processes_naming(text: str) -> dict[int, str]:
    """{pid: command line} of the processes whose command line contains ``text``."""
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found[int(pid)] = cmdline
    return found


@pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc is not installed (ci/setup.sh installs it)")
def test_ctrl_c_with_a_runsc_sandbox_up_leaves_nothing(tmp_path, no_leftovers):
    sc = write_scenarios(tmp_path / "sc", {"t.yaml": """
        id: long
        title: runs long in a sandbox
        tags: [pid]
        control: [pid]
        run: sleep 91
        expect:
          exit: 0
          host: [{namespace_differs: pid, when: created}]
        """})
    proc = subprocess.Popen(suite_command(sc, tmp_path / "out", "--runtime=runsc"), cwd=REPO, env=SUITE_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    marker = f"oci-conformance-{RUN_TAG}"
    deadline = time.monotonic() + 30
    while not any("runsc-sandbox" in cmdline for cmdline in _processes_naming(marker).values()):
        assert time.monotonic() < deadline and proc.poll() is None, "the sandbox never started"
        time.sleep(0.05)
    time.sleep(0.5)  # inside start/wait now
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert b"KeyboardInterrupt" in out
    assert _processes_naming(marker) == {}, "a sandbox or gofer outlived Ctrl-C"


def test_the_hosts_dev_null_is_never_handed_to_a_runtime(tmp_path, no_leftovers):
    """runsc fchowns the stdio it is given to its sandbox's user: the harness must give it pipes.

    With /dev/null as stdin (what the harness passed before), this machine's
    /dev/null belonged to nobody (or to the container's mapped root) for as long
    as a sandbox ran, and stayed so when a run was killed.
    """
    before = os.stat("/dev/null")
    sc = write_scenarios(tmp_path / "sc", {"sleep.yaml": """
        id: sleeps
        title: runs a moment through `run`, the path that used /dev/null as stdin
        tags: [exit-code]
        control: [pid]
        run: sleep 2
        expect: {exit: 0}
        """})
    seen: set[tuple[int, int, int]] = set()
    proc = subprocess.Popen(suite_command(sc, tmp_path / "out", "--runtime=runsc"), cwd=REPO, env=SUITE_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while proc.poll() is None:
        st = os.stat("/dev/null")
        seen.add((st.st_uid, st.st_gid, st.st_mode))
        time.sleep(0.02)
    output = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, output[-2000:]
    assert seen == {(before.st_uid, before.st_gid, before.st_mode)}, f"/dev/null changed during the run: {seen}"


#: catalog scenarios whose property runc and runsc each hold in their own way, or not at all
READ_FAIRLY = ("seccomp-refuses-reboot", "masked-sys-firmware", "nnp-set", "process-umask")


@pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc is not installed (ci/setup.sh installs it)")
def test_a_sandboxed_column_is_read_for_the_property_not_runcs_mechanism(tmp_path, no_leftovers):
    """The same catalog scenarios on runc and runsc, for real: one property, two mechanisms.

    reboot() is refused on both: by the seccomp filter's EPERM under runc
    (pass), by gVisor's kernel that has no reboot (ENOSYS, other-mechanism);
    /sys/firmware shows nothing on both: a tmpfs mask under runc, an empty
    read-only sysfs in gVisor.  gVisor's /proc/self/status has no NoNewPrivs
    line (unobservable) and it ignores process.user.umask (a real violation).
    """
    sc = tmp_path / "sc"
    sc.mkdir()
    for name in READ_FAIRLY:
        shutil.copy(REPO / "scenarios" / f"{name}.yaml", sc)
    run = run_suite(sc, tmp_path / "out", "--runtime=runc,runsc", f"--junitxml={tmp_path / 'junit.xml'}")
    assert run.returncode == 1, run.output[-3000:]  # process-umask fails on runsc, and only that
    assert run.verdicts() == {
        ("seccomp-refuses-reboot", "runc"): "pass", ("seccomp-refuses-reboot", "runsc"): "other-mechanism",
        ("masked-sys-firmware", "runc"): "pass", ("masked-sys-firmware", "runsc"): "other-mechanism",
        ("nnp-set", "runc"): "pass", ("nnp-set", "runsc"): "unobservable",
        ("process-umask", "runc"): "pass", ("process-umask", "runsc"): "fail"}, run.output[-3000:]
    reboot = run.result("seccomp-refuses-reboot", "runsc")["evidence"]
    assert "by another mechanism than the seccomp filter (EPERM)" in reboot and "reboot errno=38" in reboot
    assert "fs=sysfs" in run.result("masked-sys-firmware", "runsc")["evidence"]
    assert run.result("nnp-set", "runsc")["evidence"].startswith("could not look:")
    # the mechanism seen from the host: runc's init is in seccomp mode 2; runsc's host process is the sandbox
    assert "Seccomp (running): observed '2'" in run.result("seccomp-refuses-reboot", "runc")["evidence"]
    # the totals read as holds / holds differently / unobservable / violated, in every view
    totals = "0 holds · 2 holds differently · 1 unobservable · 1 violated"
    assert f"runsc: {totals}" in run.output
    assert f"**runsc** {totals}" in (tmp_path / "out" / "matrix.md").read_text()
    assert totals in (tmp_path / "out" / "matrix.html").read_text()
    junit = (tmp_path / "junit.xml").read_text()
    assert 'name="mechanism"' in junit and "unobservable: could not look" in junit
