"""Every expectation of a scenario, named: the unit that must earn its place.

A scenario's ``expect`` is several expectations: the exit status, each
matcher over stdout and stderr, each host fact (each of its matchers), each
testinfra attribute, each lifecycle step.  Each gets a stable id, read from
the YAML alone:

    exit   runtime_exit   stdout.equals   stdout.contains[0]   stderr.not_matches
    host[1]   host[0].matches   testinfra[0].mode   steps[2]

prefixed by the block it belongs to: none for the property (``expect``),
``observable.`` for where the checks look (``expect.observable``: if that is
missing the verdict is *unobservable*), ``mechanism.`` for how a
namespaces-and-cgroups runtime provides the property (``mechanism.expect``).

The judge produces one check per id; a negative control must break each
property and mechanism expectation, unless the scenario marks it
*corroborating* (``expect.corroborating: {ID-or-prefix: reason}``), which
says it keeps the run honest rather than proving the property.  Where the
checks look is corroborating by nature.
"""
from __future__ import annotations

from dataclasses import dataclass

from .matchers import text_matchers
from .scenario import SELF_JUDGED, Expectations, HostFact, Scenario

PROPERTY, OBSERVABLE, MECHANISM = "property", "observable", "mechanism"
#: steps that are actions, not checks: they produce no expectation
ACTION_STEPS = ("release", "wait", "sleep", "host_write")


@dataclass(frozen=True)
class ExpectationRef:
    """One expectation: its id, the block it belongs to, and why it is corroborating (if it is)."""

    id: str
    role: str                       # property | observable | mechanism
    label: str                      # what it checks, in words
    corroborating: str | None = None

    @property
    def needs_proof(self) -> bool:
        """True when a negative control must break it."""
        return self.corroborating is None


def blocks(scenario: Scenario) -> list[tuple[str, str, Expectations]]:
    """(role, id prefix, expectations) for each block the scenario has, property first."""
    out = [(PROPERTY, "", scenario.expect)]
    if scenario.expect.observable is not None:
        out.append((OBSERVABLE, "observable.", scenario.expect.observable))
    if scenario.mechanism is not None:
        out.append((MECHANISM, "mechanism.", scenario.mechanism.expect))
    return out


def fact_ids(fact: HostFact, base: str) -> list[str]:
    """The ids of one host fact: one per matcher, or the fact itself when it has none."""
    if fact.kind in SELF_JUDGED:
        return [base]
    return [f"{base}.{m}" for m in text_matchers(fact.expect)] or [base]


def _block_refs(block: Expectations, role: str, prefix: str) -> list[tuple[str, str]]:
    """(id, label) for every expectation of one block."""
    refs: list[tuple[str, str]] = []
    if block.exit is not None:
        refs.append((f"{prefix}exit", f"exit {' or '.join(map(str, block.exit))}"))
    if block.runtime_exit is not None:
        refs.append((f"{prefix}runtime_exit", f"`RUNTIME run` exits {' or '.join(map(str, block.runtime_exit))}"))
    for stream in ("stdout", "stderr"):
        exp = getattr(block, stream)
        if exp is not None:
            refs += [(f"{prefix}{stream}.{m}", f"{stream} {m}") for m in text_matchers(exp)]
    for i, fact in enumerate(block.host):
        refs += [(ident, f"host {fact.describe()}") for ident in fact_ids(fact, f"{prefix}host[{i}]")]
    for i, check in enumerate(block.testinfra):
        refs += [(f"{prefix}testinfra[{i}].{attr}", f"testinfra {check.describe()}: {attr}") for attr, _ in check.expect]
    return refs


def step_ids(scenario: Scenario) -> list[tuple[int, str]]:
    """(index in ``steps``, label) of every step that is a check."""
    out = []
    for i, step in enumerate(scenario.steps):
        verb, arg = (step, None) if isinstance(step, str) else next(iter(step.items()))
        if verb not in ACTION_STEPS and not (verb == "cli" and isinstance(arg, dict) and arg.get("cleanup")):
            out.append((i, f"step {verb}" + (f": {arg}" if arg is not None else "")))
    return out


def expectation_refs(scenario: Scenario) -> list[ExpectationRef]:
    """Every expectation of the scenario, in a stable order."""
    marks = dict(scenario.expect.corroborating)
    refs = []
    for role, prefix, block in blocks(scenario):
        for ident, label in _block_refs(block, role, prefix):
            reason = "where the checks look, not the property" if role == OBSERVABLE else _mark(ident, marks)
            refs.append(ExpectationRef(ident, role, label, reason))
    for i, label in step_ids(scenario):
        ident = f"steps[{i}]"
        refs.append(ExpectationRef(ident, PROPERTY, label, _mark(ident, marks)))
    return refs


def covers(prefix: str, ident: str) -> bool:
    """True when a corroborating mark (an id or a prefix of ids) names ``ident``."""
    return ident == prefix or ident.startswith(prefix + ".") or ident.startswith(prefix + "[")


def _mark(ident: str, marks: dict[str, str]) -> str | None:
    return next((reason for prefix, reason in marks.items() if covers(prefix, ident)), None)


def unknown_marks(scenario: Scenario) -> list[str]:
    """Corroborating marks that name no expectation of the scenario (a typo, or a stale index)."""
    idents = [r.id for r in expectation_refs(scenario)]
    return [m for m, _ in scenario.expect.corroborating if not any(covers(m, i) for i in idents)]
