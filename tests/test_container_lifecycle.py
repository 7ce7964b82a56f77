"""The one lifecycle path, with real runtimes: the exit status comes back, and the container is
deleted after a timeout, after an exception at the running point, and after Ctrl-C.

Each test runs containers through ``lifecycle.running`` (or ``held`` and the
steps) on ref and runc, then asks the runtime and the host whether anything of
the container is left: its state, its init process, its cgroups.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.catalog.loader import load_scenarios
from conformance.host import cgroupfs, lifecycle
from conformance.host.bundle import Bundle, build
from conformance.host.drivers import RuntimeDriver, VerbFailed
from conformance.host.executor import execute
from conformance.host.session import RunSession
from conformance.host.steps import run_steps
from conformance.model.scenario import Expectations, Scenario
from tests.conftest import REF_AND_RUNC, RUN_TAG

RUNTIMES = REF_AND_RUNC


def _bundle(session: RunSession, driver: RuntimeDriver, cid: str, *args: str) -> Bundle:
    spec = Scenario(id="lifecycle", title="lifecycle", tags=(), controls=(), args=args,
                    expect=Expectations(), path=Path("<test_lifecycle>"), line=0)
    return build(spec, cid, session.workdir, driver.spec_version, {})


def _gone(driver: RuntimeDriver, cid: str, pid: int | None) -> list[str]:
    """What is left of a container, asked of the runtime and of the host (empty: nothing)."""
    left = []
    if cid in driver.list_ids():
        left.append(f"{cid} still listed")
    try:
        left.append(f"state still answers: {driver.state(cid).get('status')}")
    except VerbFailed:
        pass
    if pid is not None and Path(f"/proc/{pid}").exists():
        left.append(f"init {pid} still exists ({Path(f'/proc/{pid}/stat').read_text()[:60]})")
    left += [f"cgroup {m / cid}" for m in set(cgroupfs.mounts().values()) if (m / cid).exists()]
    return left


def _drive(session: RunSession, runtime: str, args: tuple[str, ...], timeout: float, body=None
           ) -> tuple[lifecycle.Container, list[tuple[str, str]], float]:
    """One container through ``lifecycle.running``; (container, (stage, state status) seen, seconds)."""
    driver = session.driver(runtime)
    cid = session.new_container_id()
    bundle = _bundle(session, driver, cid, *args)
    seen: list[tuple[str, str]] = []

    def at(stage: str, container: lifecycle.Container) -> None:
        try:
            seen.append((stage, driver.state(cid)["status"]))
        except VerbFailed:
            seen.append((stage, "absent"))

    started = time.monotonic()
    container = None
    try:
        with open(bundle.path / "stdout", "wb") as out, open(bundle.path / "stderr", "wb") as err:
            with lifecycle.running(driver, bundle.path, cid, out, err, timeout, at=at) as container:
                seen.append(("running", driver.state(cid)["status"]))
                if body:
                    body(container)
        return container, seen, time.monotonic() - started
    finally:
        if container is not None:
            assert _gone(driver, cid, container.pid) == []
        bundle.remove()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_exit_status_comes_back_and_each_stage_sees_its_state(session, runtime):
    container, seen, _ = _drive(session, runtime, ("sh", "-c", "read _; exit 7"), timeout=20)
    assert (container.exit, container.timed_out) == (7, False)
    assert seen == [("created", "created"), ("running", "running"), ("exited", "stopped"), ("deleted", "absent")]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_container_past_its_timeout_is_killed_and_deleted(session, runtime):
    # sleep never reads stdin: releasing it changes nothing, only the timeout ends it
    container, seen, took = _drive(session, runtime, ("sleep", "120"), timeout=3)
    assert container.timed_out and container.exit is None
    assert [s for s, _ in seen] == ["created", "running", "exited", "deleted"]
    assert took < 3 + lifecycle.STOP_WAIT_S + 10  # create, the wait, the kill: not the sleep


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("raised", [RuntimeError, KeyboardInterrupt])
def test_an_exception_at_the_running_point_deletes_the_container_at_once(session, runtime, raised):
    held: list[lifecycle.Container] = []

    def fail(container: lifecycle.Container) -> None:
        held.append(container)
        raise raised("a probe failed")

    started = time.monotonic()
    with pytest.raises(raised, match="a probe failed"):
        # cat lives until its stdin closes; 60 s is what a wait would cost if the exception waited
        _drive(session, runtime, ("cat",), timeout=60, body=fail)
    assert time.monotonic() - started < 30
    container, = held
    assert container.exit is None and not container.timed_out  # not waited for: deleted at once
    assert _gone(session.driver(runtime), container.cid, container.pid) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_steps_take_one_state_call_per_poll(session, runtime, monkeypatch):
    driver = session.driver(runtime)
    calls: list[str] = []
    state = driver.state

    def counted(cid: str) -> dict:
        calls.append(cid)
        return state(cid)

    monkeypatch.setattr(driver, "state", counted)
    cid = session.new_container_id()
    bundle = _bundle(session, driver, cid, "sh", "-c", "echo up; read _; exit 3")
    steps = [{"state": "absent"}, "create", {"state": "created"}, "start", {"stdout": "up"}, {"state": "running"},
             "release", "wait", {"state": "stopped"}, "delete", {"state": "absent"}]
    try:
        with open(bundle.path / "stdout", "wb") as out, open(bundle.path / "stderr", "wb") as err:
            with lifecycle.held(driver, bundle.path, cid, out, err, 20) as container:
                results = run_steps(steps, container, bundle.path / "stdout")
        assert [(r.ok, r.detail) for r in results if not r.ok] == []
        assert len(results) == 9 and container.exit == 3
        assert calls == [cid] * 5  # five state steps, one call each (the init was reaped: "stopped" at once)
        assert _gone(driver, cid, container.pid) == []
    finally:
        bundle.remove()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_steps_that_end_mid_life_still_leave_nothing(session, runtime):
    """A scenario whose steps stop while the container runs: ``held`` force-deletes it and reaps the init."""
    driver = session.driver(runtime)
    cid = session.new_container_id()
    bundle = _bundle(session, driver, cid, "cat")
    try:
        with open(bundle.path / "stdout", "wb") as out, open(bundle.path / "stderr", "wb") as err:
            with lifecycle.held(driver, bundle.path, cid, out, err, 20) as container:
                results = run_steps(["create", "start", {"state": "running"}, {"delete": "fails"}], container,
                                    bundle.path / "stdout")
                pid = container.pid
                assert pid is not None and os.path.exists(f"/proc/{pid}")
        assert all(r.ok for r in results), [r.detail for r in results]
        assert container.exit is None  # no wait step: the status is not the scenario's
        assert _gone(driver, cid, pid) == []
    finally:
        bundle.remove()


@pytest.mark.parametrize("name, one_run", [("hooks-container-side-state-pid", False), ("hooks-env-and-argv", True),
                                           ("hooks-order-and-state", True), ("pids-fork-capped", True)])
def test_one_run_serves_only_a_scenario_whose_placeholders_it_can_fill(session, monkeypatch, name, one_run):
    """``{{init_pid}}`` is create's pid file: a scenario naming it goes through create and start (run's
    pid file may never be read when the entrypoint ends first), and reads the pid create gave; one
    whose after-exit facts need nothing of that goes through one ``run --keep`` (ref has it, as runc):
    a file a poststop hook wrote is read after run's own delete, a cgroup's counters after the exit in
    the cgroup seen while the init ran."""
    driver = session.driver("ref")
    assert driver.keeps_after_run
    attached: list[str] = []
    run_attached = driver.run_attached

    def counted(bundle, cid, *args, **kwargs):
        attached.append(cid)
        return run_attached(bundle, cid, *args, **kwargs)

    monkeypatch.setattr(driver, "run_attached", counted)
    scenario = load_scenarios(Path(__file__).parent.parent / "scenarios" / f"{name}.yaml")[0]
    done = execute(scenario, "ref", (), session)
    assert done.error is None and done.observation is not None, done.error
    assert bool(attached) is one_run
    readings = done.observation.facts
    assert readings and all(r.error is None for r in readings), readings
    if not one_run:
        assert f'"pid":{done.variables["init_pid"]}' in readings[0].value.replace(" ", "")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_init_gone_before_it_was_seen_is_run_again_through_create(session, monkeypatch, runtime):
    """A scenario reading cgroups after the exit whose one ``run`` ended before the harness saw the
    init (made certain here: its cgroups read as gone) runs again from a new bundle through create and
    start, and is judged on that run: every fact read, the runtime's exit learned by a second run,
    and nothing of either container left."""
    driver = session.driver(runtime)
    if not driver.keeps_after_run:
        pytest.skip(f"{runtime} run has no --keep: such a scenario goes through create and start at once")
    from conformance.host import observe as observe_module
    real_probe = observe_module._HostProbe
    seen: list[int] = []

    class FirstUnseen(real_probe):  # type: ignore[misc,valid-type]
        def __init__(self, pid, variables, config):
            super().__init__(pid, variables, config)
            if not seen:  # the first init the harness looks at: as if it had ended already
                seen.append(pid)
                self.cgroups = None

    session.sandbox(runtime, 20)  # the once-per-session probe's own container, before counting
    made: list[str] = []
    create = driver.create
    monkeypatch.setattr(observe_module, "_HostProbe", FirstUnseen)
    monkeypatch.setattr(driver, "create", lambda bundle, cid, *a, **k: made.append(cid) or create(bundle, cid, *a, **k))
    scenario = load_scenarios(Path(__file__).parent.parent / "scenarios" / "memory-oom-kill.yaml")[0]
    done = execute(scenario, runtime, (), session)
    assert done.error is None and done.observation is not None, done.error
    obs = done.observation
    assert seen and made == [done.variables["id"]]  # one run, then one create: the cell's
    assert [(r.fact.target, r.error) for r in obs.facts] == [("memory.oom_kill", None)]
    assert int(obs.facts[0].value) >= 1 and obs.exit == 137 and obs.runtime_exit == 137
    assert obs.leaks == []


def test_closing_a_session_lists_no_empty_root_and_kills_what_names_a_root(monkeypatch, no_leftovers):
    """Close is quick with many drivers (one per control): an empty state root is not asked through
    the runtime, and /proc is read once for every root; a process that names a driver's root (a
    runtime's daemon whose create was cut short) is still killed, and said."""
    monkeypatch.setenv("OCI_CONFORMANCE_TAG", RUN_TAG)
    made = RunSession()
    plain, control = made.driver("ref"), made.driver("ref", ("seccomp",))
    plain.root.mkdir(parents=True, exist_ok=True)
    control.root.mkdir(parents=True, exist_ok=True)
    asked: list[tuple[str, ...]] = []
    for driver in (plain, control):
        monkeypatch.setattr(driver, "_call", lambda *verb, **kw: asked.append(verb))
    # one process (a shell would fork its sleep, whose command line names the root until it execs)
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"--root={control.root}"])
    try:
        left = made.close()
        assert asked == []
        assert left == [f"process {stray.pid}"]
        stray.wait(timeout=5)  # reaped by close already (its status went there): gone long before sleep's 60 s
        assert not Path(f"/proc/{stray.pid}").exists()
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_start_returns_once_the_init_runs_the_entrypoint(session, runtime):
    """``start`` may return while the init is still in the runtime's code (here a startContainer hook
    holds it there for half a second): what the harness observes from then on must be the entrypoint.
    Without the wait, exec-confined-like-init compared an exec with runtime-ref's Python, under load."""
    session.sandbox(runtime)  # the wait is for runtimes whose state pid is the entrypoint's
    driver = session.driver(runtime)
    cid = session.new_container_id()
    bundle = _bundle(session, driver, cid, "sh", "-c", "read _")
    config = json.loads((bundle.path / "config.json").read_text())
    config["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "sleep 0.5"]}]}
    (bundle.path / "config.json").write_text(json.dumps(config))
    try:
        with open(bundle.path / "stdout", "wb") as out, open(bundle.path / "stderr", "wb") as err, \
                lifecycle.held(driver, bundle.path, cid, out, err, 20) as container:
            pid = container.create()
            runtime_code = os.readlink(f"/proc/{pid}/exe")
            container.start()
            assert os.readlink(f"/proc/{pid}/exe") != runtime_code, f"start returned with the init in {runtime_code}"
            assert os.readlink(f"/proc/{pid}/exe").endswith("busybox")
            container.release()
            assert container.wait() == 0
    finally:
        bundle.remove()
