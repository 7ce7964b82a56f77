"""The kept-open agent: one per host and session, restarted once when it dies, stopped when it hangs,
gone after the session (Ctrl-C included).  The remote host is this machine, through a real sshd."""
from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import testinfra

from conformance.catalog.loader import load_scenarios
from conformance.hosts.targets import HostError, RemoteTarget
from tests import sshd as sshd_mod
from tests.conftest import PID1, REPO, RUN_TAG, SUITE_ENV, suite_command, write_scenarios

QUICK = ("pid-ns-init-is-pid1", "uts-ns-hostname", "ipc-ns-host-shm-hidden")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server, proc, made = sshd_mod.start(tmp_path_factory.mktemp("sshd"))
    yield server
    sshd_mod.stop(proc, made)


def _scenarios(*names: str):
    return [sc for name in names for sc in load_scenarios(REPO / "scenarios" / f"{name}.yaml")]


def _target(sshd, scheme: str = "paramiko", **kw) -> RemoteTarget:
    spec = f"{scheme}://root@127.0.0.1:{sshd.port}"
    host = testinfra.get_host(spec, ssh_identity_file=str(sshd.key), ssh_config=str(sshd.ssh_config))
    return RemoteTarget(spec, host.backend, {}, RUN_TAG, **kw)


def _agent_processes() -> list[str]:
    return subprocess.run(["pgrep", "-f", f"oci-conformance-agent-{RUN_TAG}-"], capture_output=True,
                          text=True).stdout.split()


def _agent_files() -> list[str]:
    return glob.glob(f"/tmp/oci-conformance-agent-{RUN_TAG}-*")


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _passed(done) -> bool:
    return done.error is None and done.observation is not None and done.observation.exit == 0


@pytest.mark.parametrize("scheme", ["paramiko", "ssh"])
def test_one_agent_answers_every_scenario_of_the_session(sshd, scheme, no_leftovers):
    target = _target(sshd, scheme)
    try:
        assert set(target.describe(["runc"])["runtimes"]) == {"runc"}
        pids = set()
        for sc in _scenarios(*QUICK) * 2:
            done = target.execute(sc, "runc", ())
            assert _passed(done), (sc.id, done)
            assert done.host_note is None
            pids.add(target.agent.pid)
        assert target.agent.starts == 1 and len(pids) == 1
        (pid,) = pids
        assert pid is not None and _agent_processes()
    finally:
        target.close()
    assert _gone(pid) and _agent_processes() == [] and _agent_files() == []


def test_an_agent_zip_the_host_can_read_is_not_sent_through_the_channel(sshd, tmp_path, no_leftovers):
    """As a qemu guest gets it (from its 9p share): only the path goes to the bootstrap, which copies it."""
    from conformance.hosts.targets import agent_zip

    placed = tmp_path / "agent.pyz"
    placed.write_bytes(agent_zip())
    target = _target(sshd)
    sent: list[bytes] = []
    opened = target.agent.open_channel

    def recording(command: str):
        channel = opened(command)
        send = channel.send
        channel.send = lambda data: (sent.append(data), send(data))[1]
        return channel

    target.agent.open_channel = recording
    target.agent.zip_on_host = str(placed)
    try:
        assert _passed(target.execute(_scenarios(QUICK[0])[0], "runc", ()))
        assert sent[0] == f"@{placed}\n".encode() and len(sent[0]) < 1000
    finally:
        target.close()
    assert placed.exists() and _agent_processes() == [] and _agent_files() == []


def test_a_dead_agent_is_restarted_once_and_the_cell_says_so(sshd, no_leftovers):
    target = _target(sshd)
    (pid1, uts, _) = _scenarios(*QUICK)
    try:
        assert _passed(target.execute(pid1, "runc", ()))
        first = target.agent.pid
        os.kill(first, signal.SIGKILL)  # what it made stays behind: the next agent sweeps it
        assert _gone(first)
        done = target.execute(uts, "runc", ())
        assert _passed(done), done
        assert f"the agent (pid {first}) ended" in (done.host_note or "")
        assert "a new agent was started and ran the scenario again" in done.host_note
        assert target.agent.starts == 2 and target.agent.pid != first
        assert _passed(target.execute(pid1, "runc", ())) and target.agent.starts == 2
    finally:
        target.close()
    assert _agent_processes() == [] and _agent_files() == []


def test_a_hung_agent_is_stopped_at_the_timeout_and_the_next_scenario_gets_a_new_one(sshd, tmp_path,
                                                                                     no_leftovers):
    quick = write_scenarios(tmp_path / "sc", {"pid1.yaml": PID1 + "timeout: 2\n"})
    (scenario,) = load_scenarios(quick / "pid1.yaml")
    target = _target(sshd, grace_s=1.0)
    try:
        assert _passed(target.execute(scenario, "runc", ()))
        hung = target.agent.pid
        os.kill(hung, signal.SIGSTOP)  # alive, silent: a hang
        started = time.monotonic()
        done = target.execute(scenario, "runc", ())
        assert done.error is not None and "gave no answer within 3s; it was stopped" in done.error, done
        assert "a new agent was started for the next scenarios" in done.error
        assert time.monotonic() - started < 30
        assert _gone(hung)
        assert _passed(target.execute(scenario, "runc", ())) and target.agent.starts == 2
    finally:
        target.close()
    assert _agent_processes() == [] and _agent_files() == []


def test_ctrl_c_leaves_no_agent_on_an_ssh_host(sshd, tmp_path, no_leftovers):
    """SIGINT to pytest while a container runs under the remote agent: the agent removes what it made."""
    scenarios = write_scenarios(tmp_path / "sc", {"long.yaml": PID1.replace("id: pid1", "id: long")
                                                  .replace("run: echo $$", "run: sleep 61")})
    remote = f"ssh://root@127.0.0.1:{sshd.port}"
    proc = subprocess.Popen(suite_command(scenarios, tmp_path / "out", "--runtime=runc", f"--hosts={remote}",
                                          f"--ssh-identity-file={sshd.key}", f"--ssh-config={sshd.ssh_config}"),
                            cwd=REPO, env=SUITE_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not glob.glob(f"/run/oci-conformance-{RUN_TAG}-*/runc/cf-*"):  # the container exists
        assert time.monotonic() < deadline and proc.poll() is None, "the container never started"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=90)
    deadline = time.monotonic() + 10
    while (_agent_processes() or _agent_files()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _agent_processes() == [] and _agent_files() == []


def _process_tree(root: int) -> list[int]:
    """``root`` and every process below it (parents before children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def test_a_host_that_stops_answering_fails_its_remaining_cells_at_once(tmp_path, monkeypatch, no_leftovers):
    """A wedged host, for real: this test's own sshd, its sessions and the agent are stopped (SIGSTOP)
    mid-session.  The hung cell is an error, the one restart fails within its bounds, and every later
    cell (and the host's description) is that one line at once, without waiting for its own timeout."""
    from conformance.hosts import agent_link

    monkeypatch.setattr(agent_link, "QUIET_TIMEOUT_S", 3.0)
    monkeypatch.setattr(agent_link, "OPEN_TIMEOUT_S", 3.0)
    quick = write_scenarios(tmp_path / "sc", {"pid1.yaml": PID1 + "timeout: 2\n"})
    (scenario,) = load_scenarios(quick / "pid1.yaml")
    server, proc, made = sshd_mod.start(tmp_path)
    stopped: list[int] = []
    target = _target(server, grace_s=1.0)
    try:
        assert _passed(target.execute(scenario, "runc", ()))
        stopped = _process_tree(proc.pid)  # sshd, its session processes, the agent and its children
        assert target.agent.pid in stopped
        _signal_all(stopped, signal.SIGSTOP)
        started = time.monotonic()
        hung = target.execute(scenario, "runc", ())
        assert time.monotonic() - started < 30, "the restart was not bounded"
        assert hung.error is not None and "gave no answer within 3s" in hung.error, hung
        assert "the host is marked broken: its remaining cells were not run" in hung.error
        assert "\n" not in hung.error and target.broken is not None
        started = time.monotonic()
        rest = [target.execute(scenario, "runc", ()) for _ in range(3)]
        assert time.monotonic() - started < 1.0
        assert {done.error for done in rest} == {target.broken}
        assert target.broken.startswith(f"host {target.spec}: cannot run commands there: TimeoutError")
        with pytest.raises(HostError, match="marked broken"):
            target.describe(["runc"])
    finally:
        _signal_all(stopped, signal.SIGCONT)
        target.close()
        sshd_mod.stop(proc, made)
    deadline = time.monotonic() + 15  # the agent sees its input end once its session can run again
    while (_agent_processes() or _agent_files()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _agent_processes() == [] and _agent_files() == []
