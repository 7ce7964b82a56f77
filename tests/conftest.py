"""Shared helpers for the harness's own tests: run the suite, look for leftovers."""
from __future__ import annotations

import glob
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest


def _answers(path: str) -> bool:
    """Something listens on the unix socket at ``path`` (connect succeeds)."""
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


REPO = Path(__file__).resolve().parent.parent
#: the smallest real scenario, shared by the tests that need "some scenario that passes"
PID1 = """
id: pid1
title: the entrypoint is PID 1
tags: [pid]
control: [pid]
run: echo $$
expect: {exit: 0, stdout: "1"}
"""
#: a scenario that runs until it is stopped (Ctrl-C and kill tests interrupt it)
LONG = """
id: long
title: runs long
tags: [pid]
control: [pid]
run: sleep 91
expect: {exit: 0}
"""
HEADER = "# yaml-language-server: $schema=../conformance/schema/scenario.schema.json\n"


@dataclass
class SuiteRun:
    returncode: int
    output: str
    matrix: dict[str, Any] | None

    def verdicts(self) -> dict[tuple[str, str], str]:
        assert self.matrix is not None, self.output
        return {(r["scenario"], r["runtime"]): r["verdict"] for r in self.matrix["results"]}

    def result(self, scenario: str, runtime: str = "runc") -> dict[str, Any]:
        assert self.matrix is not None, self.output
        return next(r for r in self.matrix["results"] if r["scenario"] == scenario and r["runtime"] == runtime)


def suite_command(scenarios: Path | None, out: Path, *args: str) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "conformance", f"--matrix-dir={out}", "-p", "no:cacheprovider"]
    if scenarios is not None:
        cmd.append(f"--scenarios={scenarios}")
    return cmd + list(args)


def _run_tag() -> str:
    """One tag per test process, however this module is imported: pytest loads it as ``conftest``
    and the tests import it as ``tests.conftest``, two module objects, and the leftover check here
    must look for the very tag the tests' sessions carry (with a tag each, it looked for one no
    session had, and could not fail).  Kept in the environment under this process's pid, so that an
    xdist worker, which inherits its controller's environment, still draws its own."""
    return os.environ.setdefault(f"OCI_CONFORMANCE_TEST_TAG_{os.getpid()}", "t" + secrets.token_hex(3))


#: Names everything the suites started by these tests make on the host, so the
#: leftover check sees only our own objects even if other runs share the machine.
RUN_TAG = _run_tag()
SUITE_ENV = {**os.environ, "OCI_CONFORMANCE_TAG": RUN_TAG}


def run_suite(scenarios: Path | None, out: Path, *args: str, timeout: float = 600) -> SuiteRun:
    """Run ``pytest conformance`` in a child process, as a user would."""
    done = subprocess.run(suite_command(scenarios, out, *args), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=SUITE_ENV)
    matrix_file = out / "matrix.json"
    matrix = json.loads(matrix_file.read_text()) if matrix_file.exists() else None
    return SuiteRun(done.returncode, done.stdout + done.stderr, matrix)


def known_gaps(runtime: str) -> dict[str, str]:
    """Scenarios ``runtime`` is known to fail here, with the reason (tests/known_gaps.yaml)."""
    import yaml

    return (yaml.safe_load((REPO / "tests" / "known_gaps.yaml").read_text()) or {}).get(runtime) or {}


def write_scenarios(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (directory / name).write_text(HEADER + textwrap.dedent(body).lstrip())
    return directory


def host_leftovers(tag: str = RUN_TAG) -> set[str]:
    """Everything a run (of ``tag``) could leave behind on this host, as strings to diff."""
    found: set[str] = set()
    from conformance.host import cgroupfs, hoststate

    for mountpoint in set(cgroupfs.mounts().values()):
        found |= {f"cgroup {p}" for p in glob.glob(f"{mountpoint}/cf-{tag}-*")}
    found |= {f"state {p}" for p in glob.glob(f"/run/oci-conformance-{tag}-*")}
    from conformance.host.session import work_bases

    found |= {f"workdir {p}" for base in work_bases() for p in glob.glob(f"{base}/oci-conformance-{tag}-*")}
    with open("/proc/self/mountinfo") as f:
        found |= {f"mount {line.split()[4]}" for line in f if f"oci-conformance-{tag}" in line}
    found |= {f"netns {p}" for p in glob.glob(f"/run/netns/cf-{tag}-*")}  # host_setup bridge_net
    # containerd 1.6's shims put their sockets there, whatever the daemon's config says (engine/daemon.py)
    # (a socket a shim still answers on may be another worker's, at work: a leaked shim shows as a
    # process below; what may not outlive its shim is a socket nobody answers on)
    found |= {f"shim socket {p}" for p in glob.glob("/run/containerd/s/*") if not _answers(p)}
    found |= rootless_leftovers(tag)
    # the host's own links: none may come or go; but a canary link (host_setup net_canary) that a run
    # beside this one (the other xdist worker's suite) let through for a moment is that run's to remove
    found |= {f"link {name}" for name in os.listdir("/sys/class/net")
              if not _another_live_process(hoststate.canary_link_maker(name))}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:  # a process in one of this run's container cgroups (cf-<tag>-…) is ours
                cgroups = Path(f"/proc/{pid}/cgroup").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            if "State:\tZ" in status and "\nPPid:\t1\n" in status:
                continue  # ended, and the host's init reaps it: nothing of it runs or holds a resource
            # … and so is one naming this run's state root (a private containerd, its shims)
            if f"/cf-{tag}-" in cgroups or f"/run/oci-conformance-{tag}-" in cmdline:
                found.add(f"process {pid} {cmdline.strip()}")
    return found


def rootless_leftovers(tag: str = RUN_TAG) -> set[str]:
    """What the rootless lane adds to the host, named as the harness names it: users whose comment
    names run ``tag`` (rootless_user.COMMENT), their processes, and every group, subordinate range
    and delegated cgroup named oci-conformance-* (to diff: another run's may be there before)."""
    import pwd

    found: set[str] = set()
    users = {e.pw_name: e.pw_uid for e in pwd.getpwall() if f" run={tag}" in e.pw_gecos}
    found |= {f"user {name}" for name in users}
    for path in ("/etc/group", "/etc/subuid", "/etc/subgid"):
        found |= {f"{path} {line}" for line in Path(path).read_text().splitlines()
                  if line.startswith("oci-conformance-") and not _another_live_runs(line)}
    v2 = [p for p in glob.glob("/sys/fs/cgroup/oci-conformance-*") + glob.glob("/sys/fs/cgroup/unified/oci-conformance-*")
          if not _another_live_runs(os.path.basename(p))]
    found |= {f"cgroup {p}" for p in v2}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                uid = int(Path(f"/proc/{pid}/status").read_text().split("\nUid:")[1].split()[0])
            except (OSError, IndexError, ValueError):
                continue
            if uid in users.values():
                found.add(f"process {pid} of uid {uid}")
    return found


def _another_live_runs(name: str) -> bool:
    """A rootless user's group, ranges or cgroup (``oci-conformance-PID-N``: named by the pid of the run
    that made it) made by a run that still goes on and is not this process's own (the other xdist
    worker's, say): not this test's to count.  A dead maker's is counted: whoever left it, it leaked."""
    match = re.match(r"oci-conformance-(\d+)-", name)
    return match is not None and _another_live_process(int(match.group(1)))


def _another_live_process(pid: int | None) -> bool:
    """``pid`` runs, and is neither this process nor one of its descendants (what this test started)."""
    if pid is None:
        return False
    me = os.getpid()
    while pid > 1:
        if pid == me:
            return False
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            return False  # gone (or never ran): its leftovers are leaks
    return True


@pytest.fixture
def no_leftovers():
    """Fail the test if the run left a container, cgroup, mount, state root or bundle."""
    before = host_leftovers()
    yield
    after = host_leftovers()
    assert after - before == set(), f"left behind: {sorted(after - before)}"


#: ref always, runc where it is installed: the two runtimes the lifecycle-level tests run on
REF_AND_RUNC = [pytest.param(r, marks=pytest.mark.skipif(r != "ref" and not shutil.which(r), reason=f"no {r}"))
                for r in ("ref", "runc")]


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch, no_leftovers: None) -> Iterator[Any]:
    """A RunSession under this test run's tag (what no_leftovers looks for), which must close with
    none of its containers left: each test's containers were gone before the session closed."""
    from conformance.host.session import RunSession  # the harness, only for the tests that run containers

    monkeypatch.setenv("OCI_CONFORMANCE_TAG", RUN_TAG)
    made = RunSession()
    yield made
    assert made.close() == []
