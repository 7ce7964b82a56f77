"""Negative controls: every scenario must fail on ref with its control switch off.

And the reference runtime must agree with runc wherever runc passes here:
a difference is a bug in one of them.
"""
from __future__ import annotations

from tests.conftest import known_gaps, run_suite, write_scenarios


def test_every_control_fails_and_ref_agrees_with_runc(tmp_path, no_leftovers):
    run = run_suite(None, tmp_path / "out", "--runtime=ref,runc", "--controls")
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
    controls = {c["scenario"]: c for c in run.matrix["controls"]}
    assert set(controls) == scenarios, "every scenario ran its negative control"
    for name, control in controls.items():
        assert control["verdict"] in ("fail", "skip"), f"{name}: control {control['disabled']} -> {control}"
        assert set(control["disabled"]) <= set(control["control"])  # one of its controls (each is a run)
    assert "negative controls (ref with the switch off must FAIL)" in run.output
    md = (tmp_path / "out" / "matrix.md").read_text()
    assert "## Negative controls" in md and "| pid" in md


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


def test_a_switch_the_reference_runtime_lacks_is_an_error_not_a_proof():
    import pytest

    from conformance.host.runtimes import RuntimeProfile
    from conformance.host.session import RunSession
    from conformance.model.errors import ConformanceError

    session = RunSession()
    fake = RuntimeProfile(name="ref", path="/bin/sh",
                          command=["sh", "-c", 'echo \'{"switches": ["pid"]}\'', "features"])
    session._check_switches(fake, ("pid",))
    with pytest.raises(ConformanceError, match="ref has no switch teleport for this negative control"):
        session._check_switches(fake, ("teleport",))
