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
from typing import Any

from .bundle import fill
from .inside import InsideReading
from .observe import FactReading, Observation
from .scenario import Scenario, TextExpectation

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


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def text_failures(exp: TextExpectation, text: str, variables: dict[str, str]) -> list[str]:
    """The ways ``text`` misses ``exp``; empty when it matches."""
    exp = fill(exp.__dict__, variables)
    misses = []
    if exp["equals"] is not None and text.strip() != exp["equals"].strip():
        misses.append(f"expected {exp['equals'].strip()!r}")
    misses += [f"expected to contain {s!r}" for s in exp["contains"] if s not in text]
    misses += [f"expected not to contain {s!r}" for s in exp["not_contains"] if s in text]
    if exp["matches"] is not None and not re.search(exp["matches"], text, re.M):
        misses.append(f"expected to match /{exp['matches']}/")
    if exp["not_matches"] is not None and re.search(exp["not_matches"], text, re.M):
        misses.append(f"expected not to match /{exp['not_matches']}/")
    if exp["at_least"] is not None or exp["at_most"] is not None:
        value = _number(text)
        if value is None:
            misses.append("expected a number")
        else:
            if exp["at_least"] is not None and value < exp["at_least"]:
                misses.append(f"expected >= {exp['at_least']:g}")
            if exp["at_most"] is not None and value > exp["at_most"]:
                misses.append(f"expected <= {exp['at_most']:g}")
    return misses


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


def _strings(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _same(want: Any, value: Any) -> bool:
    """Equality as a scenario means it: booleans strictly, numbers by value, the rest as text."""
    if isinstance(want, bool) or isinstance(value, bool):
        return want is value
    if isinstance(want, (int, float)) and isinstance(value, (int, float)):
        return want == value
    return str(value).strip() == str(want).strip()


def inside_failures(expected: Any, value: Any, attribute: str = "") -> list[str]:
    """The ways one testinfra attribute misses its expectation (a value, or matchers)."""
    matchers = expected if isinstance(expected, dict) else {"equals": expected}
    if attribute == "mode":  # octal text either side: '644' is '0644'
        matchers = {k: (f"{int(str(v), 8):04o}" if k == "equals" and re.fullmatch(r"[0-7]{1,4}", str(v)) else v)
                    for k, v in matchers.items()}
    if not isinstance(value, list):
        misses = []
        if "equals" in matchers and not _same(matchers["equals"], value):
            misses.append(f"expected {matchers['equals']!r}")
        rest = {k: (_strings(v) if k in ("contains", "not_contains") else v)
                for k, v in matchers.items() if k != "equals"}
        return misses + (text_failures(TextExpectation.from_yaml(rest), str(value), {}) if rest else [])
    items, misses = _strings(value), []
    if "equals" in matchers and sorted(items) != sorted(_strings(matchers["equals"])):
        misses.append(f"expected {sorted(_strings(matchers['equals']))!r} (in any order)")
    misses += [f"expected to include {w!r}" for w in _strings(matchers.get("contains", [])) if w not in items]
    misses += [f"expected not to include {w!r}" for w in _strings(matchers.get("not_contains", [])) if w in items]
    if "matches" in matchers and not any(re.search(matchers["matches"], i, re.M) for i in items):
        misses.append(f"expected an item matching /{matchers['matches']}/")
    if "not_matches" in matchers and any(re.search(matchers["not_matches"], i, re.M) for i in items):
        misses.append(f"expected no item matching /{matchers['not_matches']}/")
    if "at_least" in matchers and len(items) < matchers["at_least"]:
        misses.append(f"expected >= {matchers['at_least']:g} items")
    if "at_most" in matchers and len(items) > matchers["at_most"]:
        misses.append(f"expected <= {matchers['at_most']:g} items")
    return misses


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
    checks += [Check(f"step {s['step']}", s["ok"], s["detail"]) for s in obs.steps]
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
