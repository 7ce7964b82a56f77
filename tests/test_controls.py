"""Negative controls: every scenario must fail on ref with its control switch off, and every
expectation of every scenario must earn its place.

An expectation is *proven* when some control run (on some host the tests
reach) broke it, *corroborating* when its scenario marks it so with a reason;
anything else is a check that might never fail, and these tests list it.
The local run proves what this host can run; a cgroup-v2 guest proves what
skips here (v2-only scenarios, kernel files this host lacks), and only that:
under TCG a scenario costs seconds there.

And the reference runtime must agree with runc wherever runc passes here:
a difference is a bug in one of them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from conformance.catalog.loader import load_scenarios
from conformance.reporting.document import merge, proofs
from tests.conftest import REPO, SuiteRun, host_leftovers, known_gaps, run_suite, write_scenarios

GUEST = "qemu://cgroup-v2"

#: host facts no host these tests reach has: a scenario that needs one skips everywhere, saying so, and is
#: proven nowhere (kept small and named: each entry is a check this project cannot make)
UNREACHED = {"selinux": "SELinux is off on Debian (its LSM is AppArmor), on this machine and in the guests"}


def catalog() -> set[str]:
    return {sc.id for path in (REPO / "scenarios").glob("*.yaml") for sc in load_scenarios(path)}


def unreachable() -> set[str]:
    """Scenarios that need a host fact of UNREACHED."""
    return {sc.id for path in (REPO / "scenarios").glob("*.yaml") for sc in load_scenarios(path)
            if set(sc.requires) & set(UNREACHED)}


@pytest.fixture(scope="module")
def local_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("controls") / "out"


@pytest.fixture(scope="module")
def local_run(local_out: Path) -> SuiteRun:
    """The whole catalog on ref and runc, with every control, on this host (once for this module);
    it must leave nothing behind."""
    before = host_leftovers()
    run = run_suite(None, local_out, "--runtime=ref,runc", "--controls", "-n", "2")
    left = host_leftovers() - before
    assert left == set(), f"left behind: {sorted(left)}"
    return run


def unproven(matrix: dict[str, Any]) -> dict[str, list[str]]:
    """scenario -> the expectations no control broke and no mark excuses."""
    return {s: p.unproven for s, p in sorted(proofs(matrix).items()) if p.unproven}


def skipped_here(matrix: dict[str, Any]) -> set[str]:
    """Scenarios whose every control skipped on this host (a host reason: cgroup v2, a kernel file)."""
    ran = {c["scenario"] for c in matrix["controls"] if c["verdict"] != "skip"}
    return {c["scenario"] for c in matrix["controls"] if c["scenario"] not in ran}


def _report(missing: dict[str, list[str]]) -> str:
    return "expectations no control broke (prove them with a control, or mark them corroborating with a reason):\n" + \
        "\n".join(f"  {s}: {', '.join(ids)}" for s, ids in missing.items())


def test_every_control_fails_and_ref_agrees_with_runc(local_run, local_out):
    run = local_run
    verdicts = run.verdicts()
    scenarios = {s for s, _ in verdicts}
    gaps = known_gaps("runc")
    for scenario in scenarios:
        if scenario in gaps:  # runc lacks it; ref must have it
            assert verdicts[(scenario, "ref")] == "pass", scenario
            assert verdicts[(scenario, "runc")] == "fail", f"{scenario} is fixed in runc: update tests/known_gaps.yaml"
        else:
            assert verdicts[(scenario, "ref")] == verdicts[(scenario, "runc")], scenario
    not_proven = [c for c in run.matrix["controls"] if c["verdict"] not in ("fail", "skip")]
    assert not_proven == [], not_proven
    controlled = {c["scenario"] for c in run.matrix["controls"]}
    assert controlled == scenarios, "every scenario ran its negative controls"
    for control in run.matrix["controls"]:
        assert control["verdict"] in ("fail", "skip"), f"{control['scenario']}: control {control['disabled']}"
        assert set(control["disabled"]) <= set(control["control"])
    assert "negative controls (ref with the switch off must FAIL)" in run.output
    md = (local_out / "matrix.md").read_text()
    assert "## Negative controls" in md and "| pid" in md


def test_every_expectation_run_here_is_proven_or_corroborating(local_run):
    """What this host runs is proven here; what it skips is exactly what the guest test covers."""
    matrix = local_run.matrix
    missing = unproven(matrix)
    assert not missing, _report(missing)
    judged = set(proofs(matrix)) | skipped_here(matrix)
    assert judged == catalog(), f"scenarios with no control run at all: {sorted(catalog() - judged)}"
    assert "expectations of" in local_run.output and "0 unproven" in local_run.output


@pytest.mark.skipif(os.environ.get("CONFORMANCE_SKIP_GUEST") == "1", reason="CONFORMANCE_SKIP_GUEST=1")
def test_what_skips_here_is_proven_in_a_cgroup_v2_guest(local_run, tmp_path):
    """The union of this host and a cgroup-v2 guest leaves no scenario of the catalog unproven."""
    here = skipped_here(local_run.matrix)
    if not here:
        pytest.skip("every scenario's controls ran on this host")
    guest = run_suite(None, tmp_path / "guest", "--runtime=ref", f"--hosts={GUEST}", "--controls", "-m", "control",
                      "-k", " or ".join(sorted(here)), timeout=1500)
    assert guest.matrix is not None, guest.output[-3000:]
    assert {c["host"] for c in guest.matrix["controls"]} == {GUEST}
    # -k matches substrings: a name in `here` may also select a longer one (cgroupfs-read-only-in-cgroupns)
    assert {c["scenario"] for c in guest.matrix["controls"]} >= here, guest.output[-3000:]
    still_skipped = skipped_here(guest.matrix)
    assert still_skipped == unreachable(), f"skipped on every host the tests reach: {sorted(still_skipped)}"
    union = merge([local_run.matrix, guest.matrix])
    missing = unproven(union)
    assert not missing, _report(missing)
    assert set(proofs(union)) == catalog() - unreachable()


def test_a_scenario_that_cannot_fail_is_caught(tmp_path, no_leftovers):
    sc = write_scenarios(tmp_path / "sc", {"weak.yaml": """
id: weak
title: claims to test the PID namespace but checks nothing of it
tags: [pid]
control: [pid]
run: "true"
expect: {exit: 0}
"""})
    run = run_suite(sc, tmp_path / "out", "--runtime=ref", "--controls")
    assert run.returncode == 1
    assert "negative control not proven" in run.output
    assert "with pid switched off in ref the scenario still passes" in run.output
    assert run.matrix["controls"][0]["verdict"] == "pass"


def test_an_expectation_no_control_breaks_is_listed_as_unproven(tmp_path, no_leftovers):
    """The control fails as it must (stdout breaks), but `exit` never breaks: unproven, named."""
    sc = write_scenarios(tmp_path / "sc", {"half.yaml": """
id: half
title: the entrypoint is PID 1, and it exits 0
tags: [pid]
control: [pid]
run: echo $$
expect: {exit: 0, stdout: "1"}
"""})
    run = run_suite(sc, tmp_path / "out", "--runtime=ref", "--controls")
    assert run.returncode == 0, run.output[-2000:]
    assert unproven(run.matrix) == {"half": ["exit"]}
    assert "1 proven by a control, 0 corroborating, 1 unproven" in run.output
    marked = write_scenarios(tmp_path / "sc2", {"half.yaml": """
id: half
title: the entrypoint is PID 1, and it exits 0
tags: [pid]
control: [pid]
run: echo $$
expect:
  exit: 0
  stdout: "1"
  corroborating: {exit: keeps the run honest}
"""})
    run = run_suite(marked, tmp_path / "out2", "--runtime=ref", "--controls")
    assert unproven(run.matrix) == {} and "1 proven by a control, 1 corroborating, 0 unproven" in run.output


def test_a_switch_the_reference_runtime_lacks_is_an_error_not_a_proof():
    from conformance.host.runtimes import RuntimeProfile
    from conformance.host.session import RunSession
    from conformance.model.errors import ConformanceError

    session = RunSession()
    fake = RuntimeProfile(name="ref", path="/bin/sh",
                          command=["sh", "-c", 'echo \'{"switches": ["pid"]}\'', "features"])
    session._check_switches(fake, ("pid",))
    with pytest.raises(ConformanceError, match="ref has no switch teleport for this negative control"):
        session._check_switches(fake, ("teleport",))


def test_the_terminal_names_what_is_unproven():
    from conformance.reporting.document import build_document
    from conformance.reporting.text import render_terminal

    control = {"scenario": "s", "runtime": "ref", "host": "local", "verdict": "fail", "evidence": "",
               "tags": [], "disabled": ["pid"], "control": ["pid"], "broken": ["stdout.equals"],
               "expectations": ["exit", "stdout.equals"], "corroborating": {}}
    text = render_terminal(build_document([control], {}, {}))
    assert "1 proven by a control, 0 corroborating, 1 unproven" in text
    assert text.endswith("unproven (no control broke it, no mark says why it need not break):\n  s: exit")


def test_unreached_requirements_are_requirements_and_unmet_here():
    from conformance.host.hostinfo import REQUIREMENTS
    assert set(UNREACHED) <= set(REQUIREMENTS)
    for name in UNREACHED:
        assert REQUIREMENTS[name]() is not None, f"{name} is met on this host: prove its scenarios here"
