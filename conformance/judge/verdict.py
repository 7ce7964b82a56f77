"""Judge an observation against a scenario's expectations.

Every expectation becomes a Check with the expected and the observed value
side by side, so a failing matrix cell carries its own evidence.  The
verdict is ``pass`` when all checks hold, ``fail`` when one does not, and
``error`` when the runtime could not even set the container up (a create
that failed), which is a different kind of news than a broken property.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from conformance.model.matchers import inside_failures, text_failures
from conformance.model.placeholders import fill
from conformance.model.records import FactReading, InsideReading, Observation
from conformance.model.scenario import Scenario, TextExpectation

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"


@dataclass
class Check:
    what: str
    ok: bool
    detail: str


@dataclass
class Verdict:
    verdict: str
    evidence: str
    checks: list[Check] = field(default_factory=list)


def _short(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 20] + f"… ({len(text)} chars)"


def _text_check(name: str, exp: TextExpectation, text: str, variables: dict[str, str]) -> Check:
    misses = text_failures(exp, text, variables)
    observed = f"observed {_short(text)!r}"
    return Check(name, not misses, f"{name}: {'; '.join(misses)}; {observed}" if misses else f"{name}: {observed}")


def _fact_check(reading: FactReading, variables: dict[str, str]) -> Check:
    fact = reading.fact
    name = f"host {fact.describe()}"
    if reading.error is not None:
        return Check(name, False, f"{name}: could not be read: {reading.error}")
    value = reading.value or ""
    if fact.kind == "namespace_differs":
        inside, host = re.findall(r"\[(\d+)\]", value)
        return Check(name, inside != host, f"{name}: {value}" + ("" if inside != host else " (same namespace)"))
    if fact.kind == "host_hostname_unchanged":
        before = variables["host_hostname"]
        return Check(name, value == before, f"{name}: before {before!r}, after {value!r}")
    return _text_check(name, fact.expect, value, variables)


def _testinfra_check(scenario: Scenario, reading: InsideReading, variables: dict[str, str]) -> Check:
    check = scenario.expect.testinfra[reading.index]
    name = f"testinfra {fill(check.describe(), variables)}: {reading.attribute}"
    if reading.error is not None:
        return Check(name, False, f"{name}: could not be read: {reading.error}")
    expected = fill(dict(check.expect)[reading.attribute], variables)
    misses = inside_failures(expected, reading.value, reading.attribute)
    observed = f"observed {_short(repr(reading.value))}"
    return Check(name, not misses, f"{name}: {'; '.join(misses)}; {observed}" if misses else f"{name}: {observed}")


def judge(scenario: Scenario, obs: Observation, variables: dict[str, str]) -> Verdict:
    """Turn one observation into a verdict with evidence."""
    if obs.runtime_error:
        if scenario.expect.or_refused and " create failed" in obs.runtime_error:
            return Verdict(PASS, "refused by the runtime: " + _short(obs.runtime_error, 400))
        return Verdict(ERROR, _short(obs.runtime_error, 600))
    checks: list[Check] = []
    exp = scenario.expect
    if obs.timed_out:
        checks.append(Check("timeout", False, f"the container did not finish within {scenario.timeout:g}s"))
    if exp.exit is not None:
        ok = obs.exit in exp.exit
        want = " or ".join(map(str, exp.exit))
        checks.append(Check("exit", ok, f"exit: expected {want}, observed {obs.exit}"))
    if exp.stdout is not None:
        checks.append(_text_check("stdout", exp.stdout, obs.stdout, variables))
    if exp.stderr is not None:
        checks.append(_text_check("stderr", exp.stderr, obs.stderr, variables))
    checks += [_fact_check(r, variables) for r in obs.facts]
    checks += [_testinfra_check(scenario, r, variables) for r in obs.inside]
    checks += [Check(f"step {s.step}", s.ok, s.detail) for s in obs.steps]
    if obs.leaks:
        checks.append(Check("cleanup", False, "cgroups left after delete (removed by the harness): "
                            + ", ".join(obs.leaks)))
    failed = [c for c in checks if not c.ok]
    if failed:
        evidence = "; ".join(c.detail for c in failed)
        if obs.stderr.strip() and not any(c.what == "stderr" for c in failed):
            evidence += f" | stderr: {_short(obs.stderr, 200)!r}"
        return Verdict(FAIL, evidence, checks)
    return Verdict(PASS, "; ".join(c.detail for c in checks), checks)
