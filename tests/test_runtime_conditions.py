"""Conditions the harness creates around a runtime: descriptors it is handed, its stdio files,
a config without cgroupsPath, pause/resume/update/ps/exec/cli steps, and the host facts that read them.

Each is shown on the real runtimes (ref and runc, as the catalog's scenarios use them): a fact
that reads nothing, or a condition the runtime never sees, would let those scenarios pass vacuously.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

from conformance.host import facts, handover, hoststate
from conformance.host.drivers.procs import with_fds_at_3
from conformance.model.scenario import LaunchSpec
from tests.conftest import run_suite, write_scenarios


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def test_a_process_starts_with_exactly_the_handed_descriptors_at_3_and_up(tmp_path):
    (tmp_path / "f").write_text("x")
    f = open(tmp_path / "f")
    a, b = socket.socketpair()
    argv, parked, env = with_fds_at_3([sys.executable, "-c", "import os; print(sorted(os.listdir('/proc/self/fd'),"
                                       " key=int)); print(os.readlink('/proc/self/fd/3'))"], [b.fileno(), f.fileno()])
    try:
        done = subprocess.run(argv, pass_fds=parked, env=env, capture_output=True, text=True, check=True,
                              stdin=subprocess.DEVNULL)
    finally:
        for fd in parked:
            os.close(fd)
        f.close()
        a.close()
        b.close()
    listed, third = done.stdout.splitlines()
    assert listed == "['0', '1', '2', '3', '4', '5']"  # 5: the listing's own directory
    assert third.startswith("socket:") and "OCI_CONFORMANCE_FDS" not in done.stdout


def test_handed_descriptors_are_made_then_all_closed(tmp_path):
    before = _open_fds()
    with handover.handed(LaunchSpec(("file", "socket", "pipe"), 2), tmp_path) as (launch, variables):
        assert len(launch.fds) == 3 and launch.preserve_fds == 2
        assert os.readlink(f"/proc/self/fd/{launch.fds[0]}") == str(tmp_path / "handed-file")
        assert (tmp_path / "handed-file").read_text().strip() == variables["fd_token"]
        assert os.readlink(f"/proc/self/fd/{launch.fds[1]}").startswith("socket:")
        assert os.readlink(f"/proc/self/fd/{launch.fds[2]}").startswith("pipe:")
    assert _open_fds() == before
    with handover.handed(LaunchSpec(), tmp_path) as (launch, _):
        assert launch.fds == () and launch.preserve_fds == 0


def test_a_console_socket_is_handed_exactly_when_the_terminal_or_the_scenario_says(tmp_path):
    with handover.handed(LaunchSpec(), tmp_path, terminal=True) as (launch, _):
        assert launch.console is not None and os.path.exists(launch.console.path)
        where = launch.console.path
    assert not os.path.exists(where)
    with handover.handed(LaunchSpec(), tmp_path) as (launch, _):
        assert launch.console is None
    with handover.handed(LaunchSpec(console_socket=False), tmp_path, terminal=True) as (launch, _):
        assert launch.console is None  # to see a runtime refuse a terminal without one
    with handover.handed(LaunchSpec(console_socket=True), tmp_path) as (launch, _):
        assert launch.console is not None  # to see a runtime refuse one without a terminal


def test_an_fd_fact_tells_a_pty_slave_s_devpts_and_anything_else(tmp_path):
    master, slave = os.openpty()
    read_end, write_end = os.pipe()
    try:
        me = os.getpid()
        pty_view = hoststate.fd_view(me, slave).splitlines()
        assert pty_view[0] == os.ttyname(slave)
        # this process's root is the host's: its /dev/pts is the host's devpts (the container's check comes first)
        assert re.fullmatch(r"pty slave 13[6-9]:\d+ on the container's devpts", pty_view[1])
        assert hoststate.fd_view(me, read_end).splitlines()[1] == "not a pty slave"
    finally:
        for fd in (master, slave, read_end, write_end):
            os.close(fd)


def test_proc_entries_stat_and_cgroup_facts_read_what_the_kernel_says(tmp_path):
    me = os.getpid()
    from pathlib import Path
    listing = facts.proc_entry(Path(f"/proc/{me}/fd"))
    assert listing.splitlines()[0].startswith("0 -> ")
    assert facts.proc_entry(Path(f"/proc/{me}/cwd")) == os.getcwd()
    target = tmp_path / "log"
    target.write_text("")
    target.chmod(0o600)
    assert facts.host_stat(str(target)) == f"uid={os.getuid()} gid={os.getgid()} mode=0600"
    assert facts.host_stat(str(tmp_path / "nothing-here")) == "<absent>"
    view = facts.cgroup_view(me)  # this process's own mounts: the host's hierarchies
    assert all(line.split()[1] == "root=/" and line.split()[-1] in ("ro", "rw") for line in view.splitlines())


def test_stdio_files_are_root_s_0600_and_ownership_and_paths_reach_the_scenario(tmp_path, no_leftovers):
    sc = write_scenarios(tmp_path / "sc", {"s.yaml": """
id: stdio-and-defaults
title: the harness's stdio files, a runtime-chosen cgroup, a paused read
tags: [process]
control: [stdio]
patch:
  linux: {cgroupsPath: null}
run: echo hi; read _
expect:
  exit: 0
  host:
    - host_stat: "{{bundle}}/stdout"
      equals: uid=0 gid=0 mode=0600
    - cgroup: freezer.state
      when: paused
      matches: '^(FROZEN|1)$'
    - tasks: state
      when: paused
      matches: '^\\d+ D '
    - proc: cgroup
      contains: "/runtime-ref/{{id}}"
"""})
    run = run_suite(sc, tmp_path / "out", "--runtime=ref")
    assert run.result("stdio-and-defaults", "ref")["verdict"] == "pass", run.output[-3000:]


def test_steps_alone_make_a_scenario_and_each_new_step_is_judged(tmp_path, no_leftovers):
    sc = write_scenarios(tmp_path / "sc", {"cli.yaml": """
id: cli-only
title: no run, no expect
tags: [cli]
control: [cli-checks]
steps:
  - cli: {args: [state, "{{id}}-nope"], fails: true, output: {contains: does not exist}}
  - cli: {args: [list, --quiet], output: {not_contains: "{{id}}"}}
""", "verbs.yaml": """
id: verbs
title: pause, ps, update and exec through the driver
tags: [freezer]
control: [freezer]
run: sleep 1001 & echo up; read _; kill %1
steps:
  - create
  - start
  - stdout: {contains: up}
  - ps: {matches: '^1 \\d+$'}
  - update: {pids: 50}
  - exec: {run: 'cat /proc/1/status | grep -c ^Pid', stdout: "1"}
  - pause
  - state: paused
  - resume
  - release
  - wait
expect:
  exit: 0
  host:
    - cgroup: pids.max
      when: exited
      equals: "50"
"""})
    run = run_suite(sc, tmp_path / "out", "--runtime=ref,runc")
    for runtime in ("ref", "runc"):
        for scenario in ("cli-only", "verbs"):
            assert run.result(scenario, runtime)["verdict"] == "pass", (scenario, runtime, run.output[-3000:])
    assert "ps: as expected; listed '1 " in run.result("verbs", "ref")["evidence"]
