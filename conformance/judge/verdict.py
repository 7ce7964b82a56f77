"""Judge an observation against a scenario's expectations: the property, not runc's way of providing it.

Every expectation (model/expectations.py) becomes one Check with the
expected and the observed value side by side, so a matrix cell carries its
own evidence.  The checks fall in three blocks, and the verdict follows them
in this order:

- **unobservable** — a check of ``expect.observable`` failed: the place the
  scenario reads does not exist in this runtime's kernel (gVisor has no
  ``/proc/sysvipc``).  Neither a pass nor a violation.
- **fail** — a property check failed: the property does not hold.
- **other-mechanism** — the property holds, but a ``mechanism`` check did
  not: the runtime provides it another way (ENOSYS from a sandbox's kernel
  rather than EPERM from a seccomp filter).  Shown apart, not a regression.
- **pass** — the property holds, by the expected mechanism.

(The names and their meaning: model/verdicts.py.)

``error`` means the runtime could not even set the container up, and
``skip`` (decided before running) that the host lacks what the scenario
needs.  For a sandboxed runtime (its container has no process of its own on
the host) host facts are read for what they can mean: a ``proc`` fact
describes the sandbox, not the container, and is not judged; a namespace
differs "by construction" when no process of the container exists on the
host, which holds by another mechanism.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from conformance.model.expectations import MECHANISM, OBSERVABLE, PROPERTY, blocks, expectation_refs, fact_ids, step_ids
from conformance.model.matchers import inside_failures, text_results
from conformance.model.placeholders import fill
from conformance.model.records import FactReading, InsideReading, Observation
from conformance.model.scenario import PROCESS_FACTS, SELF_JUDGED, Expectations, HostFact, Scenario
from conformance.model.verdicts import ERROR, FAIL, OTHER_MECHANISM, PASS, UNOBSERVABLE

#: a create or a start the runtime refused: the entrypoint never ran (``expect.or_refused``)
_REFUSED = re.compile(r" (create|start)( \S+)? failed \(exit ")


@dataclass
class Check:
    """One expectation judged.  ``id`` is empty for the harness's own checks (timeout, cleanup)."""

    what: str
    ok: bool
    detail: str
    id: str = ""
    role: str = PROPERTY
    #: set when the fact describes a sandbox rather than the container: the check is not judged
    sandbox: str | None = None
    #: set on a check that holds by another mechanism than the one it names (a sandboxed runtime)
    differently: str | None = None

    @property
    def judged(self) -> bool:
        return self.sandbox is None


@dataclass
class Verdict:
    verdict: str
    evidence: str
    checks: list[Check] = field(default_factory=list)

    @property
    def broken(self) -> list[str]:
        """The ids of the expectations that did not hold (what a negative control broke)."""
        return [c.id for c in self.checks if c.id and not c.ok and c.judged]


def _short(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 20] + f"… ({len(text)} chars)"


def _text_checks(ident: str, what: str, exp: Any, text: str, variables: dict[str, str], role: str) -> list[Check]:
    """One check per matcher of a text expectation; each names what was observed."""
    observed = f"observed {_short(text)!r}"
    return [Check(what, r.ok, f"{what}: {observed}" if r.ok else f"{what}: {r.miss}; {observed}",
                  f"{ident}.{r.matcher}", role)
            for r in text_results(exp, text, variables)]


def _fact_checks(reading: FactReading, ident: str, variables: dict[str, str], role: str,
                 sandbox: str | None) -> list[Check]:
    fact = reading.fact
    name = f"host {fact.describe()}"
    ids = fact_ids(fact, ident)
    if sandbox and fact.kind == "namespace_differs":
        why = (f"the container has no process on the host ({sandbox}): its {fact.target} namespace is the "
               "sandbox kernel's own, not one the host kernel made")
        return [Check(name, True, f"{name}: {why}", ids[0], role, differently=why)]
    if sandbox and fact.kind in PROCESS_FACTS:
        note = f"describes the sandbox, not the container ({sandbox})"
        return [Check(name, False, f"{name}: {note}", i, role, sandbox=note) for i in ids]
    if reading.error is not None:
        return [Check(name, False, f"{name}: could not be read: {reading.error}", i, role) for i in ids]
    value = reading.value or ""
    if fact.kind in SELF_JUDGED:
        ok, detail = _self_judged(fact, value, variables)
        return [Check(name, ok, f"{name}: {detail}", ids[0], role)]
    if ids == [ident]:  # a fact without matchers: being readable is the expectation
        return [Check(name, True, f"{name}: read {_short(value)!r}", ident, role)]
    return _text_checks(ident, name, fact.expect, value, variables, role)


def _self_judged(fact: HostFact, value: str, variables: dict[str, str]) -> tuple[bool, str]:
    """(held, what was seen) for a fact that takes no matchers."""
    if fact.kind == "namespace_differs":
        inside, host = re.findall(r"\[(\d+)\]", value)
        return inside != host, value + ("" if inside != host else " (same namespace)")
    if fact.kind == "mounts_declared":
        return not value.strip(), (f"undeclared: {_short(value)}" if value.strip()
                                   else "every mount from a host path is the root or in config.json")
    before = variables[{"host_hostname_unchanged": "host_hostname", "runtime_binary_unchanged": "runtime_digest"}
                       .get(fact.kind, f"host_{fact.target}")]
    if value == before:
        return True, f"unchanged: {_short(value, 160)!r}"
    return False, f"before {_short(before)!r}, after {_short(value)!r}{_difference(before, value)}"


def _difference(before: str, after: str) -> str:
    """The lines that came and went, for a multi-line value (routes, links)."""
    old, new = set(before.splitlines()), set(after.splitlines())
    if len(old | new) < 2:
        return ""
    return f" (added {sorted(new - old)}, removed {sorted(old - new)})"


def _inside_check(block: Expectations, local: int, ident: str, reading: InsideReading,
                  variables: dict[str, str], role: str) -> Check:
    check = block.testinfra[local]
    name = f"testinfra {fill(check.describe(), variables)}: {reading.attribute}"
    key = f"{ident}.{reading.attribute}"
    if reading.error is not None:
        return Check(name, False, f"{name}: could not be read: {reading.error}", key, role)
    expected = fill(dict(check.expect)[reading.attribute], variables)
    misses = inside_failures(expected, reading.value, reading.attribute)
    observed = f"observed {_short(repr(reading.value))}"
    return Check(name, not misses, f"{name}: {'; '.join(misses)}; {observed}" if misses else f"{name}: {observed}",
                 key, role)


def _block_checks(scenario: Scenario, obs: Observation, variables: dict[str, str],
                  sandbox: str | None) -> list[Check]:
    """The checks of every block, with their ids; host facts and inside readings by global index."""
    checks: list[Check] = []
    fact_base = inside_base = 0
    all_facts = scenario.host_facts
    for role, prefix, block in blocks(scenario):
        if block.exit is not None:
            want = " or ".join(map(str, block.exit))
            checks.append(Check("exit", obs.exit in block.exit, f"exit: expected {want}, observed {obs.exit}",
                                f"{prefix}exit", role))
        if block.runtime_exit is not None:
            want = " or ".join(map(str, block.runtime_exit))
            seen = "no exit (it was killed at the timeout)" if obs.runtime_exit is None else obs.runtime_exit
            checks.append(Check("runtime exit", obs.runtime_exit in block.runtime_exit,
                                f"`RUNTIME run` exit: expected {want}, observed {seen}", f"{prefix}runtime_exit", role))
        for stream in ("stdout", "stderr"):
            exp = getattr(block, stream)
            if exp is not None:
                checks += _text_checks(f"{prefix}{stream}", stream, exp, getattr(obs, stream), variables, role)
        for reading in obs.facts:
            index = next(i for i, f in enumerate(all_facts) if f is reading.fact)
            if fact_base <= index < fact_base + len(block.host):
                checks += _fact_checks(reading, f"{prefix}host[{index - fact_base}]", variables, role, sandbox)
        for inside in obs.inside:
            if inside_base <= inside.index < inside_base + len(block.testinfra):
                local = inside.index - inside_base
                checks.append(_inside_check(block, local, f"{prefix}testinfra[{local}]", inside, variables, role))
        fact_base += len(block.host)
        inside_base += len(block.testinfra)
    labels = dict(step_ids(scenario))
    checks += [Check(labels.get(s.index, f"step {s.step}"), s.ok, s.detail,
                     f"steps[{s.index}]" if s.index in labels else "", PROPERTY, sandbox=s.sandbox)
               for s in obs.steps]
    return checks


def _harness_checks(scenario: Scenario, obs: Observation) -> list[Check]:
    """What the harness itself requires of any run: it ended in time and left no cgroup behind."""
    checks = []
    if obs.timed_out:
        checks.append(Check("timeout", False, f"the container did not finish within {scenario.timeout:g}s"))
    if obs.leaks:
        checks.append(Check("cleanup", False, "cgroups left after delete (removed by the harness): "
                            + ", ".join(obs.leaks)))
    return checks


def judge(scenario: Scenario, obs: Observation, variables: dict[str, str]) -> Verdict:
    """Turn one observation into a verdict with evidence."""
    if obs.runtime_error:
        if scenario.expect.or_refused and _REFUSED.search(obs.runtime_error):
            return Verdict(PASS, "refused by the runtime: " + _short(obs.runtime_error, 400))
        return Verdict(ERROR, _short(obs.runtime_error, 600))
    checks = _harness_checks(scenario, obs) + _block_checks(scenario, obs, variables, obs.sandboxed)
    return _conclude(scenario, obs, checks)


def _evidence(failed: list[Check], obs: Observation) -> str:
    evidence = "; ".join(c.detail for c in failed)
    if obs.stderr.strip() and not any(c.what == "stderr" for c in failed):
        evidence += f" | stderr: {_short(obs.stderr, 200)!r}"
    return evidence


def _conclude(scenario: Scenario, obs: Observation, checks: list[Check]) -> Verdict:
    judged = [c for c in checks if c.judged]
    unseen = [c for c in judged if c.role == OBSERVABLE and not c.ok]
    if unseen:
        return Verdict(UNOBSERVABLE, "could not look: " + _evidence(unseen, obs), checks)
    # the scenario's own expectations first: a timeout or a leak is often their consequence
    failed = sorted((c for c in judged if c.role == PROPERTY and not c.ok), key=lambda c: not c.id)
    if failed:
        return Verdict(FAIL, _evidence(failed, obs), checks)
    proof = {r.id for r in expectation_refs(scenario) if r.needs_proof and r.role == PROPERTY}
    if proof and not any(c.id in proof for c in judged) and any(not c.judged for c in checks):
        notes = "; ".join(c.detail for c in checks if not c.judged)
        return Verdict(UNOBSERVABLE, f"what would show the property reads the sandbox, not the container: {notes}",
                       checks)
    differs = [c for c in judged if (c.role == MECHANISM and not c.ok) or (c.ok and c.differently)]
    if differs:
        name = scenario.mechanism.name if scenario.mechanism else "the host kernel's own primitives"
        seen = "; ".join(c.detail for c in differs)
        return Verdict(OTHER_MECHANISM, f"holds, by another mechanism than {name}: {seen}", checks)
    return Verdict(PASS, "; ".join(c.detail for c in checks), checks)
