"""What a later run sweeps of a killed one's (host/session.py sweep_dead), and what it leaves alone.

Real cgroups and processes: a killed run's container whose runtime state is
gone leaves only its cgroup (``/cf-TAG-…``) with the container's processes
in it, and a killed harness leaves its qemu guest's work dir.  The sweep
must remove those, and only when no session of that run lives on.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.host import cgroupfs, session
from conformance.host.session import SHM, STATE_BASE, RunSession, sweep_dead, work_base


def _dead_pid() -> int:
    """The pid of a process that ran and is gone (reaped)."""
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def _hierarchy() -> Path:
    """One cgroup hierarchy of this host (v1 pids, or the v2 root)."""
    mounts = cgroupfs.mounts()
    return mounts.get("pids") or next(iter(sorted(set(mounts.values()))))


def _private_tag() -> str:
    """A tag of a form the project's own runs do not make (session.OWN_TAG): a suite started meanwhile
    by another test sweeps every dead run of those forms, and would take this test's objects first."""
    return "sweep" + secrets.token_hex(3)


class Run:
    """A run of a fresh tag: its session state root (dead or alive), and a container cgroup with a process."""

    def __init__(self, owner_pid: int) -> None:
        self.tag = _private_tag()
        self.state = STATE_BASE / f"oci-conformance-{self.tag}-{owner_pid}"
        self.state.mkdir()
        self.cgroup = _hierarchy() / f"cf-{self.tag}-{secrets.token_hex(4)}"
        self.cgroup.mkdir()
        self.proc = subprocess.Popen(["sleep", "60"])
        (self.cgroup / "cgroup.procs").write_text(str(self.proc.pid))

    def remove(self) -> None:
        self.proc.kill()
        self.proc.wait()
        if self.cgroup.exists():
            self.cgroup.rmdir()
        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    made: list[Run] = []
    yield made
    for run in made:
        run.remove()


def test_a_killed_runs_container_cgroups_are_removed_with_their_processes(runs: list[Run]):
    killed = Run(_dead_pid())
    runs.append(killed)
    removed = sweep_dead(killed.tag)
    assert str(killed.state) in removed and f"cgroup {killed.cgroup}" in removed, removed
    assert not killed.cgroup.exists()
    # ended long before its 60 s (the sweep reaps what it killed, so its status is not ours to read)
    assert killed.proc.poll() is not None, "the container's process was killed with its cgroup"


def test_a_run_with_a_live_session_keeps_its_cgroups(runs: list[Run]):
    """A dead worker of a run whose other worker still runs: that run's containers are not touched."""
    live = Run(os.getpid())
    runs.append(live)
    dead_worker = STATE_BASE / f"oci-conformance-{live.tag}-{_dead_pid()}"
    dead_worker.mkdir()
    removed = sweep_dead(live.tag)
    assert removed == [str(dead_worker)], removed
    assert live.cgroup.exists() and live.proc.poll() is None


def test_a_killed_harnesss_guest_dir_is_removed_and_a_live_ones_kept():
    tag = _private_tag()
    dead = Path(tempfile.mkdtemp(prefix=f"oci-conformance-guest-{tag}-{_dead_pid()}-"))
    alive = Path(tempfile.mkdtemp(prefix=f"oci-conformance-guest-{tag}-{os.getpid()}-"))
    try:
        (dead / "console.log").write_text("a guest's console\n")
        assert sweep_dead(tag) == [str(dead)]
        assert not dead.exists() and alive.exists()
    finally:
        shutil.rmtree(dead, ignore_errors=True)
        shutil.rmtree(alive, ignore_errors=True)


def test_tags_this_project_did_not_make_are_not_swept_unless_named(runs: list[Run]):
    """Without a tag, only the forms this project makes are swept: another tool's ``oci-conformance-…``
    objects stay.  (A user's own OCI_CONFORMANCE_TAG is swept when a run of it names it.)"""
    foreign = STATE_BASE / f"oci-conformance-someone-else-{_dead_pid()}"
    foreign.mkdir()
    try:
        assert str(foreign) not in sweep_dead()
        assert foreign.exists()
        assert str(foreign) in sweep_dead("someone-else")
    finally:
        shutil.rmtree(foreign, ignore_errors=True)


def test_a_sessions_work_dir_is_on_a_memory_file_system_when_the_host_has_one(monkeypatch: pytest.MonkeyPatch):
    """Bundles go under /dev/shm when it is a tmpfs with room (this VM's /tmp is ext4), else under
    $TMPDIR, or where OCI_CONFORMANCE_WORKDIR says; the session removes its work dir either way."""
    monkeypatch.delenv("OCI_CONFORMANCE_WORKDIR", raising=False)
    on_tmpfs = any(line.split()[1:3] == [str(SHM), "tmpfs"] for line in Path("/proc/self/mounts").open())
    roomy = on_tmpfs and os.statvfs(SHM).f_bavail * os.statvfs(SHM).f_frsize >= session.SHM_MIN_FREE
    assert work_base() == (SHM if roomy else Path(tempfile.gettempdir()))
    monkeypatch.setattr(session, "SHM_MIN_FREE", 2**62)  # a /dev/shm too small (an engine's 64 MiB default)
    assert work_base() == Path(tempfile.gettempdir())
    chosen = Path(tempfile.mkdtemp(prefix="sweep-workbase-"))
    try:
        monkeypatch.setenv("OCI_CONFORMANCE_WORKDIR", str(chosen))
        run = RunSession()
        work = run.workdir
        assert work.parent == chosen and work.name.startswith("oci-conformance-")
        run.close()
        assert not work.exists()
    finally:
        shutil.rmtree(chosen, ignore_errors=True)


@pytest.mark.parametrize("base", ["shm", "tmp"])
def test_a_killed_sessions_work_dir_is_swept_wherever_it_was_made(base: str):
    """A killed run's work dir, in /dev/shm or $TMPDIR, goes with the next sweep; a live one's stays."""
    where = SHM if base == "shm" else Path(tempfile.gettempdir())
    if not where.is_dir():
        pytest.skip(f"{where} does not exist here")
    tag = _private_tag()
    dead = Path(tempfile.mkdtemp(prefix=f"oci-conformance-{tag}-{_dead_pid()}-", dir=where))
    alive = Path(tempfile.mkdtemp(prefix=f"oci-conformance-{tag}-{os.getpid()}-", dir=where))
    try:
        (dead / "config.json").write_text("{}")
        assert str(dead) in sweep_dead(tag)
        assert not dead.exists() and alive.exists()
    finally:
        shutil.rmtree(dead, ignore_errors=True)
        shutil.rmtree(alive, ignore_errors=True)


#: run in a network namespace of the test's own (with sysfs mounted anew in a private mount namespace, so
#: that /sys/class/net shows it): make canaries of a killed maker, of a live one, and a link that is no
#: canary; sweep; print what was removed and what is left
_CANARY_SWEEP = """
import json, os, subprocess, sys
from conformance.host import host_setup, hoststate
subprocess.run(["mount", "-t", "sysfs", "sysfs", "/sys"], check=True)
ip = lambda *a: subprocess.run(["ip", *a], check=True)
ip("link", "set", "lo", "up")
dead, live = int(sys.argv[1]), os.getpid()
for name in (f"cfk{dead:06x}beef", f"cfk{live:06x}beef", "cfkeeper", "cfk000000beef"):
    ip("link", "add", name, "type", "bridge")
for pid in (dead, live, 0):  # pid 0 makes no canary: a route with that metric is someone else's
    metric = str(pid * hoststate.CANARY_METRIC_PER_PID + 7)
    ip("route", "add", hoststate.CANARY_ROUTE_DEST + "/24", "dev", "lo", "metric", metric)
removed = host_setup.sweep_dead_canaries()
routes = [r.split()[6] for r in open("/proc/net/route").read().splitlines()[1:]
          if r.split()[1] == hoststate.CANARY_ROUTE_HEX]
print(json.dumps({"removed": removed, "links": sorted(os.listdir("/sys/class/net")), "routes": routes,
                  "live": live}))
"""


@pytest.mark.skipif(shutil.which("ip") is None or shutil.which("unshare") is None, reason="no ip or unshare")
def test_a_killed_makers_network_canaries_are_swept_and_a_live_ones_kept():
    """A net_canary link or route a broken runtime let reach the host's namespace is named after its
    maker (hoststate.CANARY_LINK): when the maker was killed, the next sweep deletes it; a live maker's,
    and a link or route that is no canary's (not named so, or naming pid 0), stay (here in a network
    namespace of the test's own)."""
    dead = _dead_pid()
    done = subprocess.run(["unshare", "--net", "--mount", sys.executable, "-c", _CANARY_SWEEP, str(dead)],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    live = seen["live"]
    assert seen["removed"] == [f"link cfk{dead:06x}beef",
                               f"route 198.51.100.0/24 dev lo metric {dead * 1000 + 7}"]
    assert seen["links"] == sorted(["lo", "cfkeeper", "cfk000000beef", f"cfk{live:06x}beef"])
    assert sorted(seen["routes"]) == sorted([str(live * 1000 + 7), "7"])


def test_a_net_canary_is_named_after_its_maker(tmp_path: Path):
    """What the sweep reads (the maker's pid) is what net_canary writes, in the link's name and the
    route's metric, and the name fits a link's 15 characters."""
    from conformance.host import host_setup, hoststate

    with host_setup.net_canary(tmp_path) as variables:
        assert len(variables["net_canary_link"]) <= 15
        assert hoststate.canary_link_maker(variables["net_canary_link"]) == os.getpid()
        assert hoststate.canary_route_maker(variables["net_canary_metric"]) == os.getpid()
