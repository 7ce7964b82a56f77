"""testinfra inside a container: the exec backend, the container_host fixture, expect.testinfra."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.catalog.loader import load_scenarios
from conformance.host import cgroupfs
from conformance.host.session import RunSession
from conformance.hosts.targets import agent_zip
from conformance.model.matchers import inside_failures
from conformance.plugin.fixtures import running_container
from tests.conftest import run_suite, write_scenarios

RUNTIMES = [pytest.param(r, marks=pytest.mark.skipif(r != "ref" and not shutil.which(r), reason=f"no {r}"))
            for r in ("ref", "runc", "crun")]


@pytest.mark.parametrize("container_runtime", RUNTIMES)
def test_testinfra_modules_read_the_container_through_exec(container_host):
    host = container_host
    passwd = host.file("/etc/passwd")
    assert passwd.exists and passwd.is_file and passwd.user == "root" and passwd.mode == 0o644
    assert host.file("/bin/sh").linked_to == "/bin/busybox"
    assert not host.file("/nonexistent").exists
    assert host.mount_point("/proc").filesystem == "proc"
    assert "ro" in host.mount_point("/proc/sys").options  # a readonly path of the base config
    assert host.interface.names() == ["lo"] and "127.0.0.1" in host.interface("lo").addresses
    assert not host.interface("eth0").exists
    assert host.sysctl("kernel.hostname") == "conformance"
    # user and group: busybox has no getent; the backend's /etc lookup stands in
    assert (host.user().name, host.user().uid) == ("root", 0)
    assert (host.user("nobody").uid, host.user("nobody").home, host.user("nobody").shell) == (
        65534, "/nonexistent", "/bin/false")
    assert host.group("nogroup").exists and host.group("nogroup").gid == 65534
    assert not host.group("no-such-group").exists and not host.user("no-such-user").exists
    # process: busybox ps has no `time` column; the backend lets testinfra use `tty` instead
    init = host.process.get(comm="cat")
    assert (init.pid, init.ppid, init.user) == (1, 0, "root")
    assert len(host.process.filter()) <= 3  # cat, ps, at most the shell: the PID namespace's own


@pytest.mark.parametrize("container_patch", [{"hostname": "ctr-fixture", "process": {"cwd": "/tmp"}}])
def test_container_patch_and_commands_inside(container_host):
    host = container_host
    assert host.check_output("hostname") == "ctr-fixture"
    assert host.check_output("pwd") == "/tmp"  # exec inherits the container's process settings
    assert host.run("tr '\\0' ' ' < /proc/1/cmdline").stdout.strip() == "cat"
    done = host.run("echo out; echo err >&2; exit 7")
    assert (done.rc, done.stdout, done.stderr) == (7, "out\n", "err\n")
    assert host.run("printf %%s %s", "a b; rm -rf /").stdout == "a b; rm -rf /"  # arguments are quoted


def test_nothing_outlives_the_container_even_when_the_test_fails():
    session = RunSession()
    try:
        with pytest.raises(RuntimeError, match="the test failed"):
            with running_container(session, "runc") as host:
                cid = host.backend.hostname
                driver = session.driver("runc")
                pid = driver.state(cid)["pid"]
                assert any((m / cid).is_dir() for m in cgroupfs.mounts().values())  # cgroupsPath /<id>
                assert host.run("true").rc == 0
                raise RuntimeError("the test failed")
        assert driver.list_ids() == []
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/cmdline").read_bytes() != b"cat\0"
        assert not (session.workdir / cid).exists()
        assert not any((m / cid).exists() for m in cgroupfs.mounts().values())
        done = host.run("true")  # the container is gone: a clear failure, not a hang
        assert done.rc != 0 and done.stderr
    finally:
        session.close()


# -- the scenario vocabulary ------------------------------------------------------------------
def test_matchers_over_values_and_lists():
    assert inside_failures(True, True) == [] and inside_failures(True, 1) != []
    assert inside_failures(65534, 65534) == [] and inside_failures("65534", 65534) == []
    assert inside_failures("0644", "0644", "mode") == [] and inside_failures("644", "0644", "mode") == []
    assert inside_failures("0600", "0644", "mode") == ["expected '0600'"]
    assert inside_failures(["lo", "eth0"], ["eth0", "lo"]) == []
    assert inside_failures(["lo"], ["eth0", "lo"]) == ["expected ['lo'] (in any order)"]
    assert inside_failures({"contains": "ro"}, ["rw", "nosuid"]) == ["expected to include 'ro'"]
    assert inside_failures({"contains": "ro"}, ["ro", "nosuid"]) == []  # membership, not substring
    assert inside_failures({"contains": "r"}, ["ro"]) == ["expected to include 'r'"]
    assert inside_failures({"not_matches": r"^(?!198\.18\.)"}, ["198.18.3.2", "10.0.0.1"]) != []
    assert inside_failures({"at_most": 3}, 4) == ["expected <= 3"]
    assert inside_failures({"matches": "^ctr-"}, "ctr-x") == []


def test_a_check_names_its_module_by_the_first_module_key(tmp_path):
    sc = write_scenarios(tmp_path, {"v.yaml": """
id: v
title: vocabulary
tags: [pid]
control: [pid]
run: [cat]
expect:
  testinfra:
    - process: {comm: cat}
      user: root
    - user: nobody
      group: nogroup
    - file: /etc/passwd
      user: root
      group: root
    - interface: ~
      names: [lo]
"""})
    checks = load_scenarios(sc / "v.yaml")[0].expect.testinfra
    assert [(c.module, c.argument) for c in checks] == [
        ("process", {"comm": "cat"}), ("user", "nobody"), ("file", "/etc/passwd"), ("interface", None)]
    assert checks[0].expect == (("user", "root"),)


def test_an_unknown_attribute_is_one_line_with_file_and_line(tmp_path):
    sc = write_scenarios(tmp_path / "sc", {"bad.yaml": """
id: bad
title: misspelt
tags: [pid]
control: [pid]
run: [cat]
expect:
  testinfra:
    - file: /etc/passwd
      owner: root
"""})
    run = run_suite(sc, tmp_path / "out", "--runtime=runc")
    assert "bad.yaml:10: unknown key 'owner' in expect.testinfra.0 (allowed: content_string, exists, file," in run.output


def test_testinfra_scenarios_pass_fail_with_evidence_and_leave_nothing(tmp_path, no_leftovers):
    sc = write_scenarios(tmp_path / "sc", {"t.yaml": """
id: ti-holds
title: holds
tags: [uts]
control: [uts]
patch: {hostname: ctr-ti}
run: [cat]
expect:
  exit: 0
  testinfra:
    - sysctl: kernel.hostname
      value: "{{id}}-no"
    - file: /etc/passwd
      user: nobody
    - process: {comm: no-such-process}
      pid: 1
---
id: ti-exits-first
title: the entrypoint does not stay up
tags: [uts]
control: [uts]
run: "true"
expect:
  testinfra:
    - file: /etc/passwd
      exists: true
"""})
    run = run_suite(sc, tmp_path / "out", "--runtime=runc,ref")
    for runtime in ("runc", "ref"):
        held = run.result("ti-holds", runtime)
        assert held["verdict"] == "fail"
        ev = held["evidence"]
        assert "testinfra sysctl kernel.hostname: value: expected 'cf-" in ev and "observed 'ctr-ti'" in ev
        assert "testinfra file /etc/passwd: user: expected 'nobody'; observed 'root'" in ev
        assert "testinfra process (comm=no-such-process): pid: could not be read: LookupError: 0 processes" in ev
        first = run.result("ti-exits-first", runtime)
        assert first["verdict"] == "fail" and "could not be read" in first["evidence"], first


def _agent(python_flags: list[str], scenario_file: Path, runtime: str, tmp_path: Path) -> dict:
    """Run one scenario through the agent zip, as a remote host would."""
    zip_path = tmp_path / "agent.pyz"
    zip_path.write_bytes(agent_zip())
    request = {"scenario": load_scenarios(scenario_file)[0].to_json(), "runtime": runtime, "disabled": []}
    payload = base64.b64encode(json.dumps(request).encode()).decode()
    done = subprocess.run([sys.executable, *python_flags, str(zip_path), "execute", payload],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_host_without_testinfra_skips_and_says_why(tmp_path, no_leftovers):
    sc = write_scenarios(tmp_path / "sc", {"ti.yaml": """
id: ti
title: t
tags: [pid]
control: [pid]
run: [cat]
expect: {testinfra: [{process: {comm: cat}, pid: 1}]}
""", "plain.yaml": """
id: plain
title: p
tags: [pid]
control: [pid]
run: echo $$
expect: {stdout: "1"}
"""})
    # python -S: no site-packages, so no testinfra (nor yaml, jsonschema…): a bare remote host
    bare = _agent(["-S"], sc / "ti.yaml", "runc", tmp_path)
    assert bare["skip"].startswith("host lacks testinfra") and bare["observation"] is None
    assert _agent(["-S"], sc / "plain.yaml", "runc", tmp_path)["observation"]["stdout"].strip() == "1"
    full = _agent([], sc / "ti.yaml", "runc", tmp_path)  # a host with testinfra reads the checks there
    assert full["observation"]["inside"] == [{"index": 0, "attribute": "pid", "value": 1, "error": None}]


def test_system_info_in_one_exec_also_reads_an_os_release():
    import testinfra.host

    from conformance.host import testinfra_exec as testinfra_backend

    class Recorded(testinfra_backend.RuntimeExecBackend):
        commands: list[str] = []

        def run(self, command, *args, **kwargs):
            self.commands.append(command)
            out = b"Linux x86_64\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n"
            return self.result(0, command.encode(), out, b"")

    host = testinfra.host.Host(Recorded("cf-x", ["runc", "--root", "/r"]))
    testinfra_backend._known_linux(host)
    assert (host.system_info.type, host.system_info.arch, host.system_info.distribution,
            host.system_info.release, host.system_info.codename) == ("linux", "x86_64", "debian", "12", "bookworm")
    assert len(Recorded.commands) == 1
