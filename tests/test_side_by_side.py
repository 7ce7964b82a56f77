"""Several runtimes in one session: side by side, on xdist workers, and as junit XML."""
from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import run_suite, write_scenarios

SCENARIOS = {
    "pid.yaml": """
        id: pid1
        title: the entrypoint is PID 1
        tags: [pid]
        control: [pid]
        run: echo $$; read _
        expect:
          exit: 0
          stdout: "1"
          host: [{namespace_differs: pid}]
        """,
    "uts.yaml": """
        id: hostname
        title: the configured hostname
        tags: [uts]
        control: [uts]
        patch: {hostname: side-by-side}
        run: hostname
        expect: {exit: 0, stdout: side-by-side}
        """,
    "fails.yaml": """
        id: wrong-on-purpose
        title: expects a PID the entrypoint never has
        tags: [pid]
        control: [pid]
        run: echo $$
        expect: {exit: 0, stdout: "2"}
        """,
}

RUNTIMES = [name for name in ("runc", "crun") if shutil.which(name)]


@pytest.mark.skipif(len(RUNTIMES) < 2, reason="needs runc and crun installed (ci/setup.sh)")
def test_two_runtimes_on_two_workers_make_one_matrix_and_junit_names_carry_both(tmp_path, no_leftovers):
    sc = write_scenarios(tmp_path / "sc", SCENARIOS)
    runtimes = ",".join(RUNTIMES)
    serial = run_suite(sc, tmp_path / "serial", f"--runtime={runtimes}")
    junit = tmp_path / "junit.xml"
    parallel = run_suite(sc, tmp_path / "parallel", f"--runtime={runtimes}", "-n", "2", f"--junitxml={junit}")
    assert parallel.returncode == 1, parallel.output[-3000:]  # wrong-on-purpose fails on both
    assert parallel.verdicts() == serial.verdicts()
    assert parallel.verdicts() == {(s, rt): ("fail" if s == "wrong-on-purpose" else "pass")
                                   for s in ("pid1", "hostname", "wrong-on-purpose") for rt in RUNTIMES}
    assert list(parallel.matrix["runtimes"]) == RUNTIMES
    assert "conformance matrix" in parallel.output and "[namespaces]" in parallel.output

    cases = {tc.get("name"): tc for tc in ET.parse(junit).iter("testcase")}
    assert set(cases) == {f"{s}[{rt}@local]" for s in ("pid1", "hostname", "wrong-on-purpose") for rt in RUNTIMES}
    assert all(tc.get("classname", "").endswith(".yaml") for tc in cases.values())
    failure = cases[f"wrong-on-purpose[{RUNTIMES[0]}@local]"].find("failure")
    assert failure is not None and "stdout: expected '2'; observed '1'" in failure.get("message", "") + (failure.text or "")
    assert cases[f"pid1[{RUNTIMES[1]}@local]"].find("failure") is None
