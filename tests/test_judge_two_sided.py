"""Judging what the host saw and what `RUNTIME run` returned, without a runtime.

The self-judged host facts (host_unchanged, mounts_declared,
runtime_binary_unchanged) compare with what was read before the container;
runtime_exit is one more expectation; a sandboxed runtime's process facts
(mounts_declared too) describe the sandbox and are not judged.
"""
from __future__ import annotations

from pathlib import Path

from conformance.catalog.loader import load_scenarios
from conformance.judge.verdict import judge
from conformance.model.expectations import expectation_refs
from conformance.model.records import FactReading, Observation
from conformance.model.scenario import Scenario
from conformance.model.verdicts import FAIL, OTHER_MECHANISM, PASS
from tests.conftest import write_scenarios

TWO_SIDED = """
id: two-sided
title: the routes stay, no host path is bound in, the runtime binary is untouched, run exits 137
tags: [net]
control: [net]
run: "true"
expect:
  exit: 137
  runtime_exit: 137
  host:
    - host_unchanged: routes
    - mounts_declared: true
    - runtime_binary_unchanged: true
    - namespace_differs: net
"""
BEFORE = {"host_routes": "ipv4 eth0 00000000/00000000", "runtime_digest": "abc  /usr/sbin/runc"}


def _scenario(tmp_path: Path) -> Scenario:
    (scenario,) = load_scenarios(write_scenarios(tmp_path, {"s.yaml": TWO_SIDED}) / "s.yaml")
    return scenario


def _observe(scenario: Scenario, routes: str = BEFORE["host_routes"], mounts: str = "",
             digest: str = BEFORE["runtime_digest"], runtime_exit: int | None = 137,
             sandboxed: str | None = None) -> Observation:
    values = [routes, mounts, digest, "container net:[1] host net:[2]"]
    return Observation(exit=137, runtime_exit=runtime_exit, sandboxed=sandboxed,
                       facts=[FactReading(f, value=v) for f, v in zip(scenario.host_facts, values)])


def test_each_self_judged_fact_and_runtime_exit_is_one_expectation(tmp_path):
    assert [r.id for r in expectation_refs(_scenario(tmp_path))] == \
        ["exit", "runtime_exit", "host[0]", "host[1]", "host[2]", "host[3]"]


def test_unchanged_and_declared_pass(tmp_path):
    scenario = _scenario(tmp_path)
    verdict = judge(scenario, _observe(scenario), BEFORE)
    assert verdict.verdict == PASS, verdict.evidence
    assert "`RUNTIME run` exit: expected 137, observed 137" in verdict.evidence


def test_a_route_that_came_is_named(tmp_path):
    scenario = _scenario(tmp_path)
    after = BEFORE["host_routes"] + "\nipv4 lo 006433C6/00FFFFFF metric 4242"
    verdict = judge(scenario, _observe(scenario, routes=after), BEFORE)
    assert verdict.verdict == FAIL and verdict.broken == ["host[0]"]
    assert "added ['ipv4 lo 006433C6/00FFFFFF metric 4242']" in verdict.evidence


def test_an_undeclared_mount_a_changed_binary_and_runs_exit_each_fail_on_their_own(tmp_path):
    scenario = _scenario(tmp_path)
    verdict = judge(scenario, _observe(scenario, mounts="/run/x: host path /srv (ext4), not in config.json",
                                       digest="def  /usr/sbin/runc", runtime_exit=1), BEFORE)
    assert verdict.verdict == FAIL
    assert verdict.broken == ["runtime_exit", "host[1]", "host[2]"]
    assert "undeclared: /run/x: host path /srv" in verdict.evidence


def test_a_run_killed_at_the_timeout_has_no_exit(tmp_path):
    scenario = _scenario(tmp_path)
    verdict = judge(scenario, _observe(scenario, runtime_exit=None), BEFORE)
    assert verdict.broken == ["runtime_exit"] and "it was killed at the timeout" in verdict.evidence


def test_a_sandbox_s_mount_table_is_not_judged(tmp_path):
    scenario = _scenario(tmp_path)
    verdict = judge(scenario, _observe(scenario, mounts="/x: host path /srv (ext4), not in config.json",
                                       sandboxed="the state pid is not the entrypoint"), BEFORE)
    assert verdict.verdict == OTHER_MECHANISM, verdict.evidence  # the namespace, by construction
    (mounts,) = [c for c in verdict.checks if c.id == "host[1]"]
    assert not mounts.judged and "describes the sandbox" in mounts.detail


def test_a_refused_start_is_a_refusal_too(tmp_path):
    (scenario,) = load_scenarios(write_scenarios(tmp_path, {"r.yaml": """
id: refused
title: a dangerous cwd is refused or contained
tags: [cve]
control: [cwd-check]
run: "true"
expect: {or_refused: true, exit: 0}
"""}) / "r.yaml")
    for said, verdict in (("runsc start cf-1 failed (exit 128): failed to find initial working directory", PASS),
                          ("runc create failed (exit 1): mkdir /proc/self/fd/7: not a directory", PASS),
                          ("runc create did not return within 20s", "error")):
        assert judge(scenario, Observation(runtime_error=said), {}).verdict == verdict, said
