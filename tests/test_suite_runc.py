"""End to end on a real runtime (runc): the catalog, bad input, failures, timeouts, Ctrl-C."""
from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.conftest import (
    LONG,
    PID1,
    REPO,
    SUITE_ENV,
    host_leftovers,
    known_gaps,
    run_suite,
    suite_command,
    write_scenarios,
)


def test_the_catalog_passes_on_runc(tmp_path, no_leftovers):
    run = run_suite(None, tmp_path / "reports", "--runtime=runc")
    assert run.returncode == (1 if known_gaps("runc") else 0), run.output[-3000:]
    verdicts = run.verdicts()
    assert len(verdicts) >= 14
    failing = {s for (s, _), v in verdicts.items() if v not in ("pass", "skip")}
    assert failing == set(known_gaps("runc")), run.output[-3000:]
    assert "conformance matrix" in run.output and "total" in run.output
    assert {p.name for p in (tmp_path / "reports").iterdir()} == {"matrix.json", "matrix.md", "matrix.html"}
    assert run.matrix["runtimes"]["runc"]["spec_version"] == "1.0.2-dev"
    assert run.matrix["host"]["cgroup"] in ("v1", "v2", "hybrid")


def test_a_bad_file_is_one_line_and_the_others_still_run(tmp_path, no_leftovers):
    sc = write_scenarios(tmp_path / "sc", {"good.yaml": PID1, "bad.yaml": PID1.replace("id: pid1", "id: bad\nfoo: 1")})
    run = run_suite(sc, tmp_path / "out", "--runtime=runc")
    assert run.returncode == 1
    assert f"{sc / 'bad.yaml'}:3: unknown key 'foo' in top level" in run.output
    assert run.verdicts()[("pid1", "runc")] == "pass"
    assert run.verdicts()[("bad.yaml", "runc")] == "error"


def test_a_failing_scenario_carries_evidence_and_leaves_nothing(tmp_path, no_leftovers):
    sc = write_scenarios(tmp_path / "sc", {"f.yaml": PID1.replace('stdout: "1"', 'stdout: "2"') + """
---
id: lifecycle-fail
title: a failing host fact
tags: [pid]
control: [pid]
run: read _
expect:
  exit: 0
  host: [{proc: status, field: NoNewPrivs, equals: "0"}]
"""})
    run = run_suite(sc, tmp_path / "out", "--runtime=runc")
    assert run.returncode == 1
    assert run.result("pid1")["verdict"] == "fail"
    assert run.result("pid1")["evidence"].startswith("stdout: expected '2'; observed '1'")
    assert "field NoNewPrivs (running): expected '0'; observed '1'" in run.result("lifecycle-fail")["evidence"]


@pytest.mark.parametrize("host_fact", [False, True], ids=["run", "create-start"])
def test_a_timed_out_scenario_is_a_failure_and_leaves_nothing(tmp_path, no_leftovers, host_fact):
    body = """
id: hangs
title: never ends
tags: [pid]
control: [pid]
timeout: 1
run: sleep 91; echo done
expect:
  exit: 0
"""
    if host_fact:
        body += "  host: [{namespace_differs: pid, when: created}]\n"
    run = run_suite(write_scenarios(tmp_path / "sc", {"t.yaml": body}), tmp_path / "out", "--runtime=runc")
    assert run.returncode == 1
    assert "did not finish within 1s" in run.result("hangs")["evidence"]


def test_ctrl_c_during_a_run_leaves_nothing(tmp_path, no_leftovers):
    sc = write_scenarios(tmp_path / "sc", {"t.yaml": LONG})
    proc = subprocess.Popen(suite_command(sc, tmp_path / "out", "--runtime=runc"), cwd=REPO, env=SUITE_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not any(x.startswith("process") for x in host_leftovers()):
        assert time.monotonic() < deadline and proc.poll() is None, "the container never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert b"KeyboardInterrupt" in out


def test_a_missing_runtime_is_a_clear_error(tmp_path):
    sc = write_scenarios(tmp_path / "sc", {"p.yaml": PID1})
    run = run_suite(sc, tmp_path / "out", "--runtime=runc,no-such-runtime")
    assert run.verdicts() == {("pid1", "runc"): "pass", ("pid1", "no-such-runtime"): "error"}
    assert "--runtime=no-such-runtime: not found on PATH" in run.result("pid1", "no-such-runtime")["evidence"]


def test_tags_select_with_dash_m(tmp_path):
    run = run_suite(None, tmp_path / "out", "--runtime=runc", "-m", "pid and not mnt")
    scenarios = {s for s, _ in run.verdicts()}
    from conformance.catalog.loader import load_scenarios

    tagged = {sc.id for p in (REPO / "scenarios").glob("*.yaml") for sc in load_scenarios(p)
              if "pid" in sc.tags and "mnt" not in sc.tags}
    assert scenarios == tagged and {"pid-ns-init-is-pid1", "pid-ns-host-processes-hidden"} <= tagged, \
        run.output[-2000:]


def test_parallel_workers_assemble_one_matrix(tmp_path, no_leftovers):
    serial = run_suite(None, tmp_path / "a", "--runtime=runc", "-m", "pid or net or uts or ipc")
    parallel = run_suite(None, tmp_path / "b", "--runtime=runc", "-m", "pid or net or uts or ipc", "-n", "2")
    assert parallel.returncode == serial.returncode, parallel.output[-2000:]
    assert "internal error" not in parallel.output.lower()
    assert len(parallel.verdicts()) >= 8 and parallel.verdicts() == serial.verdicts()
