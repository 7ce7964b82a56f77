"""The rootless lane on this machine, with real runtimes and a real user.

The runtime's own process and the container's run as the user made for the
driver (read from the host's /proc while they run); the user, its group, its
subordinate ranges, its state root and bundles are gone after a run, after
a failed create, after Ctrl-C — and after SIGKILL, once a later run swept
them.  A host that lets no unprivileged user make a user namespace skips
the lane's cells with its reason while the other columns run on.
"""
from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from conformance.host import rootless_cgroup, rootless_user
from conformance.host.bundle import build
from conformance.host.drivers import rootless
from conformance.host.drivers.procs import reap_adopted
from conformance.host.executor import execute
from conformance.host.session import RunSession, work_bases
from conformance.model.scenario import Expectations, Scenario
from tests.conftest import PID1, REPO, RUN_TAG, SUITE_ENV, rootless_leftovers, run_suite, suite_command, write_scenarios

RUNTIMES = [pytest.param(r, marks=pytest.mark.skipif(r != "ref" and not shutil.which(r), reason=f"no {r}"))
            for r in ("runc", "crun", "ref")]

LONG = """
id: long-runner
title: runs long enough to be interrupted
tags: [pid]
control: [pid]
run: echo up; sleep 60
timeout: 90
expect: {exit: 0}
"""
#: no runtime can create this: a bind mount's source does not exist
CREATE_FAILS = """
id: create-fails
title: create fails
tags: [lifecycle]
control: [pid]
patch:
  mounts: {$append: [{destination: /x, type: bind, source: /nonexistent-oci-conformance-source, options: [bind]}]}
run: "true"
steps: [create, start]   # through create, which must succeed: its refusal is the cell's error
"""
#: the init's host uid, read while it runs
HOST_UID = """
id: host-uid
title: the entrypoint's host uid
tags: [user]
control: [user]
run: read _
expect:
  host:
    - {proc: status, field: Uid, matches: '^[1-9]'}
"""


@pytest.fixture(autouse=True)
def one_at_a_time() -> Iterator[None]:
    """These tests diff the host's users, groups and subordinate ranges: under xdist, one of them at a
    time (another's user, half made or half removed, would read as this one's leftover)."""
    import fcntl

    fd = os.open(Path(__file__).parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _uids(pid: int) -> list[int]:
    """real, effective, saved and filesystem uid of a process, as the host's /proc says."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(v) for v in line.split()[1:]]
    raise LookupError(pid)


def _processes(match: str) -> dict[int, str]:
    """pid -> cmdline of every process whose command line contains ``match``."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if match in cmdline:
                found[int(entry)] = cmdline
    return found


def _contained(cmdline: str) -> list[int]:
    """pids running ``cmdline`` in a pid namespace other than the host's (a container's processes)."""
    host = os.readlink("/proc/self/ns/pid")
    pids = []
    for pid, line in _processes(cmdline).items():
        try:
            if line.strip() == cmdline and os.readlink(f"/proc/{pid}/ns/pid") != host:
                pids.append(pid)
        except OSError:
            continue
    return pids


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_runtime_and_its_container_run_as_the_users_uid(session: RunSession, runtime: str):
    """While ``RUNTIME run`` waits for its container, every process naming the driver's state root
    (the runtime's own) and every process inside the rootfs (the container's) runs as the user."""
    driver = session.driver(f"{runtime}:rootless")
    assert isinstance(driver, rootless.RootlessDriver)
    user = driver.user
    assert user.uid != 0 and pwd.getpwuid(user.uid).pw_name == user.name and user.made
    cid = session.new_container_id()
    naps = f"sleep 3.{int(cid[-6:], 16) % 1000000:06d}"  # a command line that names this container
    spec = Scenario(id="uid", title="uid", tags=(), controls=(), args=("sh", "-c", f"echo up; exec {naps}"),
                    expect=Expectations(), path=Path("<test_rootless>"), line=0)
    bundle = build(spec, cid, session.workdir, driver.spec_version, {}, driver.bundle_needs)
    try:
        assert bundle.rootfs.stat().st_uid == user.uid, "the rootfs copy is the user's"
        with open(bundle.path / "stdout", "wb") as out, open(bundle.path / "stderr", "wb") as err:
            ran = threading.Thread(target=driver.run, args=(bundle.path, cid, out, err, 30))
            ran.start()
            try:
                deadline = time.monotonic() + 20
                while b"up" not in (bundle.path / "stdout").read_bytes() and time.monotonic() < deadline:
                    time.sleep(0.02)
                runtime_procs = {pid: _uids(pid) for pid in _processes(f"--root {driver.root} ")}
                container_procs = {pid: _uids(pid) for pid in _contained(naps)}
            finally:
                ran.join()
        assert runtime_procs, f"no process of {runtime} was seen running (stderr: {(bundle.path / 'stderr').read_text()})"
        assert all(uids == [user.uid] * 4 for uids in runtime_procs.values()), runtime_procs
        assert container_procs and all(uids == [user.uid] * 4 for uids in container_procs.values()), container_procs
    finally:
        bundle.remove()


def test_ref_rootless_makes_a_time_namespace_with_offsets_in_the_containers_user_namespace(session: RunSession):
    """An unprivileged runtime holds CAP_SYS_ADMIN only in a user namespace of its own: runtime-ref makes
    the container's time namespace there (spawn._Holder), and the offsets are the config's."""
    driver = session.driver("ref:rootless")
    cid = session.new_container_id()
    spec = Scenario(id="timens", title="timens", tags=(), controls=(), args=("cat", "/proc/self/timens_offsets"),
                    expect=Expectations(), path=Path("<test_rootless>"), line=0,
                    patch={"linux": {"namespaces": {"$append": [{"type": "time"}]},
                                     "timeOffsets": {"monotonic": {"secs": 86400, "nanosecs": 0}}}})
    bundle = build(spec, cid, session.workdir, driver.spec_version, {}, driver.bundle_needs)
    try:
        with open(bundle.path / "stdout", "wb") as out, open(bundle.path / "stderr", "wb") as err:
            driver.run(bundle.path, cid, out, err, 30)
        said = (bundle.path / "stdout").read_text()
        assert re.search(r"^monotonic\s+86400\s+0$", said, re.M), (said, (bundle.path / "stderr").read_text())
    finally:
        bundle.remove()


def _run_users(tag: str) -> dict[str, int]:
    return {e.pw_name: e.pw_uid for e in pwd.getpwall() if f" run={tag}" in e.pw_gecos}


def _user_procs(uids: set[int]) -> list[int]:
    """Live processes (not zombies) of these uids."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                alive = " Z " not in Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2][:3]
                if alive and _uids(int(entry))[0] in uids:
                    out.append(int(entry))
            except (OSError, LookupError):
                continue
    return out


@pytest.mark.skipif(not shutil.which("runc") or not shutil.which("crun"), reason="needs runc and crun")
def test_a_run_leaves_no_user_range_or_dir_even_when_create_fails(tmp_path: Path, no_leftovers: None):
    scenarios = write_scenarios(tmp_path / "sc", {"pid1.yaml": PID1, "create-fails.yaml": CREATE_FAILS,
                                                  "host-uid.yaml": HOST_UID})
    done = run_suite(scenarios, tmp_path / "out", "--runtime=runc,runc:rootless,crun:rootless",
                     f"--junitxml={tmp_path / 'junit.xml'}")
    verdicts = done.verdicts()
    for runtime in ("runc:rootless", "crun:rootless"):
        assert verdicts[("pid1", runtime)] == "pass", done.output
        failed = done.result("create-fails", runtime)
        assert failed["verdict"] == "error" and "create: expected to succeed" in failed["evidence"], failed
        uid = int(re.search(r"observed '(\d+)", done.result("host-uid", runtime)["evidence"]).group(1))
        assert uid >= 1000 and not any(e.pw_uid == uid for e in pwd.getpwall()), f"uid {uid} still has a user"
    entry = done.matrix["runtimes"]["runc:rootless"]
    assert entry["rootless"] is True and entry["lane"] == "rootless"
    assert done.matrix["runtimes"]["runc"]["rootless"] is False
    assert any("setpriv" in a for a in entry["adaptations"]) and any(a.startswith("config: ") for a in entry["adaptations"])
    assert "rootless_cgroups" in done.matrix["hosts"]["local"]
    assert 'name="pid1[runc:rootless@local]"' in (tmp_path / "junit.xml").read_text()


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _start_long_run(tmp_path: Path) -> subprocess.Popen[bytes]:
    scenarios = write_scenarios(tmp_path / "sc", {"long.yaml": LONG})
    return subprocess.Popen(suite_command(scenarios, tmp_path / "out", "--runtime=runc:rootless"), cwd=REPO,
                            env=SUITE_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _container_up(tag: str) -> bool:
    users = _run_users(tag)
    return bool(users) and any(_processes_named("sleep 60", set(users.values())))


def _processes_named(match: str, uids: set[int]) -> list[int]:
    return [pid for pid in _processes(match) if _uids(pid)[0] in uids]


@pytest.mark.skipif(not shutil.which("runc"), reason="needs runc")
def test_ctrl_c_removes_the_user_its_ranges_and_dirs(tmp_path: Path, no_leftovers: None):
    """SIGINT while the container runs (as the interrupted pytest gets it): the run removes it all
    (no_leftovers: the users, groups, ranges, processes, cgroups, state roots and work dirs)."""
    child = _start_long_run(tmp_path)
    try:
        _wait_for(lambda: _container_up(RUN_TAG), 60, "the rootless container to run")
        users = _run_users(RUN_TAG)
        assert any(line.split(":")[0] in users for line in Path("/etc/subuid").read_text().splitlines())
        homes = [Path(pwd.getpwnam(name).pw_dir) for name in users]
        assert all(home.is_dir() for home in homes)
        child.send_signal(signal.SIGINT)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    assert _run_users(RUN_TAG) == {} and not _user_procs(set(users.values()))
    assert not any(home.exists() for home in homes)


@pytest.mark.skipif(not shutil.which("runc"), reason="needs runc")
def test_a_later_run_sweeps_what_a_killed_run_left(tmp_path: Path):
    before = rootless_leftovers()
    child = _start_long_run(tmp_path)
    try:
        _wait_for(lambda: _container_up(RUN_TAG), 60, "the rootless container to run")
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # nothing of the run cleans up after this
        child.wait()
    try:
        users = _run_users(RUN_TAG)
        assert users and _user_procs(set(users.values())), "the killed run should have left its user and container"
        homes = [Path(pwd.getpwnam(name).pw_dir) for name in users]
        swept = rootless_user.sweep_dead()
        reap_adopted()  # the killed run's containers were re-parented to this process (a subreaper)
        assert sorted(swept) == sorted(f"user {name}" for name in users)
        assert rootless_leftovers() - before == set()
        assert not _user_procs(set(users.values())) and not any(h.exists() for h in homes)
    finally:  # the killed run's own state root and work dir (the agent's sweep, not the lane's, takes those)
        for path in glob.glob(f"/run/oci-conformance-{RUN_TAG}-*") + [
                p for base in work_bases() for p in glob.glob(f"{base}/oci-conformance-{RUN_TAG}-*")]:
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.skipif(not shutil.which("runc"), reason="needs runc")
def test_a_driver_that_fails_after_useradd_removes_its_user(session: RunSession, monkeypatch: pytest.MonkeyPatch):
    made: dict[str, int] = {}

    def refuse(*args: object) -> None:
        made.update(_run_users(RUN_TAG))  # the user exists by then
        raise OSError("no cgroup for you")
    monkeypatch.setattr(rootless_cgroup, "delegate", refuse)
    with pytest.raises(OSError, match="no cgroup for you"):
        session.driver("runc:rootless")
    assert made and _run_users(RUN_TAG) == {}


@pytest.mark.skipif(not shutil.which("runc"), reason="needs runc")
def test_a_host_without_unprivileged_user_namespaces_skips_the_lane_only(session: RunSession,
                                                                      monkeypatch: pytest.MonkeyPatch):
    # the probe runs as the user for real; here it answers as a kernel with the feature off does
    monkeypatch.setattr(rootless, "USERNS_PROBE", ["sh", "-c", "echo 'unshare: unshare failed: Operation not permitted' >&2; exit 1"])
    scenario = Scenario(id="pid1", title="pid1", tags=("pid",), controls=(("pid",),), args=("sh", "-c", "echo $$"),
                        expect=Expectations(), path=Path("<test_rootless>"), line=0)
    skipped = execute(scenario, "runc:rootless", (), session)
    assert skipped.skip is not None and skipped.skip.startswith("runc:rootless: the host lets no unprivileged user")
    assert "unshare failed: Operation not permitted" in skipped.skip and "max_user_namespaces" in skipped.skip
    assert execute(scenario, "runc:rootless", (), session).skip == skipped.skip  # asked once, remembered
    ran = execute(scenario, "runc", (), session)
    assert ran.observation is not None and ran.observation.stdout.strip() == "1"
    assert _run_users(RUN_TAG) == {}
