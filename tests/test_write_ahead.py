"""The harness's own work moved into its waits: a finished container's bundle removed in the next wait
(host/idle.py), the next scenario's bundle written while the current one runs (host/ahead.py).  Real
containers; what is checked is that the cell is judged the same, from the bundle its scenario would
have had, and that nothing outlives the session."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from conformance.catalog.loader import load_scenarios
from conformance.host import ahead, idle
from conformance.host.drivers.procs import poll_until
from conformance.host.executor import execute
from conformance.judge.verdict import judge
from conformance.model.verdicts import PASS
from tests.conftest import REF_AND_RUNC

SCENARIOS = Path(__file__).parent.parent / "scenarios"


def _scenario(name: str):
    return load_scenarios(SCENARIOS / f"{name}.yaml")[0]


def _bundles(session) -> set[str]:
    """The bundle directories in the session's work dir (not its spare rootfs copies)."""
    return {p.name for p in session.workdir.iterdir() if p.name.startswith("cf-")}


# -- idle work ------------------------------------------------------------------------------
def test_queued_work_is_done_in_a_wait_and_what_fails_is_said_at_the_finish():
    done: list[str] = []

    def broken() -> None:
        raise OSError("no such bundle")

    idle.later(lambda: done.append("first"))
    idle.later(broken)
    assert done == []  # nothing happens until a wait would sleep
    assert poll_until(lambda: len(done) == 1, time.monotonic() + 5)
    assert idle.finish() == ["deferred clean-up test_queued_work_is_done_in_a_wait_and_what_fails_is_said_at_"
                             "the_finish.<locals>.broken failed: no such bundle"]
    assert idle.finish() == []


def test_at_most_a_few_pieces_wait_the_oldest_is_done_at_once():
    done: list[int] = []
    for n in range(idle.QUEUE_MAX + 2):
        idle.later(lambda n=n: done.append(n))
    assert done == [0, 1]
    assert idle.finish() == [] and done == list(range(idle.QUEUE_MAX + 2))


def test_the_benchmarks_yardstick_does_no_queued_work_while_it_times_a_runtime(tmp_path):
    """bare.timed_run times the runtime alone: harness work queued meanwhile waits for a real wait."""
    from conformance.host.bare import timed_run

    done: list[int] = []
    idle.later(lambda: done.append(1))
    with open(tmp_path / "out", "wb") as out:
        assert timed_run(["sleep", "0.02"], out.fileno(), out.fileno(), 10) >= 0.02
    assert done == []
    assert idle.finish() == [] and done == [1]


# -- bundles written ahead ------------------------------------------------------------------
@pytest.mark.parametrize("runtime", REF_AND_RUNC)
def test_the_next_scenario_runs_from_the_bundle_written_while_the_one_before_ran(session, runtime):
    """Two scenarios in a row: the second's bundle is written during the first's run, and the second
    runs from it (its container id is the written one) and is judged as always."""
    first, second = _scenario("pid-ns-init-is-pid1"), _scenario("uts-ns-hostname")
    assert ahead.can_write_ahead(second)
    done = execute(first, runtime, (), session, upcoming=ahead.Next(second, runtime))
    assert done.error is None and judge(first, done.observation, done.variables).verdict == PASS
    written = session.take_ahead()
    assert written is not None and written.next.scenario is second and written.bundle.path.is_dir()
    session.keep_ahead(written)  # put back, as the run leaves it
    done = execute(second, runtime, (), session)
    assert done.error is None, done.error
    assert done.variables["id"] == written.cid and written.used
    assert judge(second, done.observation, done.variables).verdict == PASS
    assert session.take_ahead() is None
    idle.finish()
    assert _bundles(session) == set()  # both removed (the second's in a wait, or by the finish)


def test_a_bundle_written_for_another_scenario_is_removed_and_one_written_as_always(session):
    first, second, third = (_scenario(n) for n in ("pid-ns-init-is-pid1", "uts-ns-hostname", "process-cwd"))
    execute(first, "ref", (), session, upcoming=ahead.Next(second, "ref"))
    written = session.take_ahead()
    assert written is not None
    session.keep_ahead(written)
    done = execute(third, "ref", (), session)  # not the scenario it was written for
    assert done.error is None and done.variables["id"] != written.cid and not written.used
    assert judge(third, done.observation, done.variables).verdict == PASS
    idle.finish()
    assert _bundles(session) == set()


def test_no_bundle_is_written_ahead_for_what_reads_the_host_before_its_container(session):
    """Host set-up, an image, a fact read before the container exists: written early, such a bundle
    could differ from the one its scenario makes; its scenario writes its own."""
    later = [_scenario(n) for n in ("net-ns-only-loopback", "overlay-whiteout-hides-lower-file",
                                     "cve-2019-5736-runtime-binary-unreachable")]
    assert [ahead.can_write_ahead(s) for s in later] == [False, False, False]
    execute(_scenario("pid-ns-init-is-pid1"), "ref", (), session, upcoming=ahead.Next(later[0], "ref"))
    idle.finish()
    assert session.take_ahead() is None



def test_a_serial_run_writes_each_scenarios_bundle_while_the_one_before_runs(tmp_path, no_leftovers):
    """Through pytest, as a user runs it: the items learn the item after them (pytest's ``nextitem``),
    and every scenario but the first runs from the bundle written during the one before."""
    import os
    import subprocess
    import sys

    from tests.conftest import SUITE_ENV, suite_command, write_scenarios

    scenarios = write_scenarios(tmp_path / "sc", {f"s{n}.yaml": f"""
        id: ahead-{n}
        title: the bundle of a scenario after another
        tags: [pid]
        control: [pid]
        run: echo $$
        expect: {{exit: 0, stdout: "1"}}
        """ for n in range(3)})
    (tmp_path / "count_ahead.py").write_text(
        "from conformance.host import ahead\n"
        "served = []\n"
        "real = ahead.Written.serves\n"
        "def serves(self, *args):\n"
        "    served.append(real(self, *args))\n"
        "    return served[-1]\n"
        "ahead.Written.serves = serves\n"
        "def pytest_unconfigure(config):\n"
        "    print('served ahead:', served)\n")
    env = {**SUITE_ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run([*suite_command(scenarios, tmp_path / "out", "--runtime=ref", "-p", "count_ahead", "-s")],
                          cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "served ahead: [True, True]" in done.stdout, done.stdout
