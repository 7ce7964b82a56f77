"""The judge, without a runtime: one check per expectation, and what each verdict means.

Observations are made up here (the records are plain data); the real runs
are in test_controls.py and test_suite_runc.py.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conformance.catalog.loader import load_scenarios
from conformance.judge.verdict import judge
from conformance.model.errors import ScenarioError
from conformance.model.expectations import expectation_refs
from conformance.model.records import FactReading, InsideReading, Observation, StepResult
from conformance.model.scenario import Scenario
from conformance.reporting.document import build_document, control_proven, proof_totals, proofs
from tests.conftest import write_scenarios

REPO = Path(__file__).resolve().parent.parent

SECCOMP = """
id: kexec-refused
title: kexec_load is refused before the kernel reads its arguments
tags: [seccomp]
control: [seccomp]
run: /probe
expect:
  exit: 0
  stdout: {matches: 'errno=(1|38)$'}
  observable:
    stdout: {contains: 'errno='}
  corroborating:
    exit: the probe ran to its end
mechanism:
  name: the seccomp filter (EPERM)
  expect:
    stdout: {contains: errno=1}
    host:
      - {proc: status, field: Seccomp, equals: "2"}
"""


def _scenario(tmp_path: Path, text: str = SECCOMP) -> Scenario:
    (scenario,) = load_scenarios(write_scenarios(tmp_path, {"s.yaml": text}) / "s.yaml")
    return scenario


def _observe(scenario: Scenario, stdout: str, seccomp: str = "2", sandboxed: str | None = None) -> Observation:
    (fact,) = scenario.host_facts
    return Observation(exit=0, stdout=stdout, facts=[FactReading(fact, value=seccomp)], sandboxed=sandboxed)


def test_every_matcher_is_an_expectation_with_an_id(tmp_path):
    refs = {r.id: r for r in expectation_refs(_scenario(tmp_path))}
    assert list(refs) == ["exit", "stdout.matches", "observable.stdout.contains[0]",
                          "mechanism.stdout.contains[0]", "mechanism.host[0].equals"]
    assert refs["exit"].corroborating == "the probe ran to its end"
    assert refs["observable.stdout.contains[0]"].corroborating  # where the checks look: corroborating by nature
    assert refs["stdout.matches"].needs_proof and refs["mechanism.host[0].equals"].needs_proof


def test_the_expected_mechanism_is_a_pass(tmp_path):
    sc = _scenario(tmp_path)
    verdict = judge(sc, _observe(sc, "errno=1"), {})
    assert verdict.verdict == "pass", verdict.evidence
    assert verdict.broken == []


def test_the_property_held_another_way_is_other_mechanism_not_a_fail(tmp_path):
    sc = _scenario(tmp_path)
    verdict = judge(sc, _observe(sc, "errno=38", seccomp="0"), {})
    assert verdict.verdict == "other-mechanism"
    assert "the seccomp filter (EPERM)" in verdict.evidence and "errno=38" in verdict.evidence
    assert verdict.broken == ["mechanism.stdout.contains[0]", "mechanism.host[0].equals"]


def test_a_violated_property_fails_whatever_the_mechanism_says(tmp_path):
    sc = _scenario(tmp_path)
    verdict = judge(sc, _observe(sc, "errno=22", seccomp="0"), {})
    assert verdict.verdict == "fail"
    assert "stdout.matches" in verdict.broken and "errno=22" in verdict.evidence


def test_a_missing_observation_point_is_unobservable(tmp_path):
    sc = _scenario(tmp_path)
    verdict = judge(sc, _observe(sc, "probe: not found"), {})
    assert verdict.verdict == "unobservable"
    assert verdict.evidence.startswith("could not look:")


NAMESPACE = """
id: pid-ns
title: the init is PID 1, in its own PID namespace
tags: [pid]
control: [pid]
run: echo $$; read _
expect:
  stdout: "1"
  host:
    - namespace_differs: pid
    - {proc: status, field: NSpid, matches: '\\s1$'}
"""


def test_a_sandboxed_container_is_read_for_what_the_host_can_see(tmp_path):
    sc = _scenario(tmp_path, NAMESPACE)
    ns, nspid = sc.host_facts
    obs = Observation(exit=0, stdout="1", sandboxed="state pid 7 runs /usr/bin/runsc, not the entrypoint",
                      facts=[FactReading(ns, value="container pid:[1] host pid:[1]"),
                             FactReading(nspid, value="7")])
    verdict = judge(sc, obs, {})
    assert verdict.verdict == "other-mechanism", verdict.evidence
    assert "no process on the host" in verdict.evidence
    (sandbox_fact,) = [c for c in verdict.checks if not c.judged]
    assert sandbox_fact.id == "host[1].matches" and "describes the sandbox" in sandbox_fact.detail
    # the same reading from a runtime whose container is a host process: the same namespace is a failure
    native = judge(sc, Observation(exit=0, stdout="1", facts=obs.facts), {})
    assert native.verdict == "fail" and native.broken == ["host[0]", "host[1].matches"]


def test_what_only_the_sandbox_shows_is_unobservable(tmp_path):
    sc = _scenario(tmp_path, NAMESPACE.replace('  stdout: "1"\n', "").replace("    - namespace_differs: pid\n", ""))
    (nspid,) = sc.host_facts
    obs = Observation(exit=0, sandboxed="the sandbox", facts=[FactReading(nspid, value="7")])
    assert judge(sc, obs, {}).verdict == "unobservable"


def test_an_unknown_corroborating_mark_names_its_line(tmp_path):
    text = SECCOMP.replace("    exit: the probe ran to its end", "    exit: the probe ran to its end\n    stdrr: typo")
    with pytest.raises(ScenarioError, match=r"s.yaml:14: expect.corroborating: 'stdrr' names no expectation"):
        _scenario(tmp_path, text)


def _synthetic(scenario: Scenario) -> Observation:
    """An observation with every fact, inside check and step read, whatever the values."""
    inside = [InsideReading(i, attr, value="x") for i, check in enumerate(scenario.inside_checks)
              for attr, _ in check.expect]
    steps = [StepResult(str(step), False, "made up", index=i) for i, step in enumerate(scenario.steps)
             if str(step) not in ("release", "wait")]
    return Observation(exit=0, stdout="x", stderr="x", inside=inside, steps=steps,
                       facts=[FactReading(f, value="container x:[1] host x:[2]") for f in scenario.host_facts])


class _AnyPlaceholder(dict):
    """Every placeholder is known (its value does not matter to which checks are made)."""

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> str:
        return "x"


@pytest.mark.parametrize("path", sorted((REPO / "scenarios").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_judge_makes_exactly_the_checks_the_yaml_names(path):
    """For every scenario of the catalog: the ids the judge gives its checks are the ids of its expectations."""
    for scenario in load_scenarios(path):
        checks = judge(scenario, _synthetic(scenario), _AnyPlaceholder()).checks
        assert sorted(c.id for c in checks if c.id) == sorted(r.id for r in expectation_refs(scenario))


def test_controls_count_per_expectation_across_runs_and_hosts():
    def control(host: str, verdict: str, broken: list[str]) -> dict:
        return {"scenario": "s", "runtime": "ref", "host": host, "verdict": verdict, "evidence": "",
                "disabled": ["pid"], "broken": broken, "expectations": ["stdout.equals", "host[0]", "host[1]"],
                "corroborating": {"exit": "keeps the run honest"}}
    doc = build_document([control("local", "fail", ["stdout.equals"]),
                          control("qemu://cgroup-v2", "fail", ["host[0]"]),
                          control("local", "other-mechanism", ["host[1]"])], {}, {})
    assert control_proven(control("local", "fail", ["host[0]"]))
    assert not control_proven(control("local", "other-mechanism", ["host[1]"]))  # not a fail: proves nothing
    assert not control_proven(control("local", "fail", []))  # failed only on the harness's own checks
    entry = proofs(doc)["s"]
    assert entry.proven == ["stdout.equals", "host[0]"] and entry.unproven == ["host[1]"]
    assert proof_totals(doc) == {"scenarios": 1, "proven": 2, "corroborating": 1, "unproven": 1}
