"""The regression gate: compare a run's matrix with a saved one.

A *cell* is one scenario on one runtime and host.  Between a baseline and a
new matrix a cell

- **regressed** when it was not bad in the baseline (pass, other-mechanism,
  unobservable) and now fails or errors,
- **improved** when it failed or errored and now holds (pass or other-mechanism),
- **changed mechanism** when it went between pass and other-mechanism: the
  property holds either way, how it is provided changed (listed, not judged),
- **changed** when it went between fail and error, or to or from
  unobservable without becoming bad (listed, not judged),
- is a **known failure** when it failed (or errored) alike in both,
- is **ignored** when it was skipped in either run (a host reason says
  nothing about the runtime), or exists in only one of the two runs.

``pytest conformance --baseline OLD.json`` fails the session on any
regression, and only then for matrix cells: a failure the baseline already
had is accepted, so a runtime's CI can gate merges on "nothing got worse".
Everything else that fails (a negative control, an invalid scenario file, a
cell the baseline does not know) keeps failing the session as usual.
Offline: ``python -m conformance diff OLD.json NEW.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Tuple, cast

from conformance.model.verdicts import BAD, HOLDS, SKIP

from .document import SCHEMA_VERSION, column
from .rows import Matrix, ResultRow

Key = Tuple[str, str, str]  # (scenario, runtime, host)


class BaselineError(Exception):
    """A baseline that cannot be read or is not a matrix.json; the message says which and why."""


@dataclass(frozen=True)
class Change:
    scenario: str
    column: str
    old: str
    new: str
    evidence: str = ""

    def line(self) -> str:
        return f"{self.scenario} on {self.column}: {self.old} → {self.new.upper() if self.new in BAD else self.new}"


@dataclass
class Comparison:
    """The outcome of comparing two matrices, cell by cell."""

    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    mechanism_changes: list[Change] = field(default_factory=list)
    known_failures: list[Key] = field(default_factory=list)
    unchanged_passes: int = 0
    skipped: int = 0
    only_old: list[Key] = field(default_factory=list)
    only_new: list[Key] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.regressions

    def accepted(self) -> set[Key]:
        """Non-passing cells that the baseline explains: known failures and fail↔error changes."""
        return set(self.known_failures) | {_key_of(c) for c in self.changed}

    def summary_line(self) -> str:
        return (f"{len(self.regressions)} regression(s), {len(self.improvements)} improvement(s), "
                f"{len(self.mechanism_changes)} changed mechanism, {len(self.changed)} changed otherwise "
                f"(fail↔error, unobservable), {len(self.known_failures)} known failure(s), "
                f"{self.unchanged_passes} unchanged; ignored: {self.skipped} skipped in either run, "
                f"{len(self.only_old)} only in the baseline, {len(self.only_new)} only in this run")

    def render(self, old_name: str = "baseline", new_name: str = "this run") -> str:
        """Readable text: regressions first, each with the new evidence."""
        lines = [f"comparing {new_name} with {old_name}"]
        lines += [f"  {v}" for v in self.versions]
        if self.regressions:
            lines.append(f"REGRESSIONS ({len(self.regressions)}): not failing in {old_name}, failing now")
            for c in self.regressions:
                lines.append(f"  ✗ {c.line()}")
                if c.evidence:
                    lines.append("      " + c.evidence.strip().replace("\n", "\n      "))
        else:
            lines.append("no regressions")
        if self.improvements:
            lines.append(f"improvements ({len(self.improvements)}): failed in {old_name}, hold now")
            lines += [f"  ✓ {c.line()}" for c in self.improvements]
        if self.mechanism_changes:
            lines.append(f"changed mechanism ({len(self.mechanism_changes)}): the property holds in both, "
                         "provided another way (not a regression)")
            for c in self.mechanism_changes:
                lines.append(f"  ≈ {c.line()}")
                if c.new != "pass" and c.evidence:
                    lines.append("      " + c.evidence.strip().replace("\n", "\n      "))
        if self.changed:
            lines.append(f"changed otherwise ({len(self.changed)}):")
            lines += [f"  ~ {c.line()}" for c in self.changed]
        if self.only_new:
            lines.append(f"not in {old_name} ({len(self.only_new)}): " + ", ".join(label(k) for k in self.only_new))
        if self.only_old:
            lines.append(f"not run now ({len(self.only_old)}): " + ", ".join(label(k) for k in self.only_old))
        lines.append(self.summary_line())
        return "\n".join(lines)


def label(key: Key) -> str:
    scenario, runtime, host = key
    return f"{scenario} on {runtime if host == 'local' else f'{runtime}@{host}'}"


def _key_of(change: Change) -> Key:
    runtime, _, host = change.column.partition("@")
    return (change.scenario, runtime, host or "local")


def load(path: Path | str) -> Matrix:
    """A matrix.json document; raises BaselineError with a sentence a person can act on."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise BaselineError(f"{path}: cannot read the baseline ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise BaselineError(f"{path}: not JSON ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise BaselineError(f"{path}: not a matrix.json (no 'results' list); pass the matrix.json a run wrote")
    if doc.get("schema") != SCHEMA_VERSION:
        raise BaselineError(f"{path}: matrix schema {doc.get('schema')!r}, this suite reads schema {SCHEMA_VERSION}")
    return cast(Matrix, doc)  # the fields this code reads were checked above


def _cells(doc: Matrix) -> dict[Key, ResultRow]:
    return {(r["scenario"], r["runtime"], r.get("host", "local")): r for r in doc["results"]}


def _versions(old: Matrix, new: Matrix) -> list[str]:
    lines = []
    for name, rt in new.get("runtimes", {}).items():
        was = old.get("runtimes", {}).get(name)
        if was is not None and was.get("version") != rt.get("version"):
            lines.append(f"{name}: version {was.get('version')} → {rt.get('version')}")
    return lines


def compare(old: Matrix, new: Matrix) -> Comparison:
    """Compare two matrix documents cell by cell (see the module doc for the rules)."""
    before, after = _cells(old), _cells(new)
    out = Comparison(versions=_versions(old, new))
    for key in sorted(before.keys() | after.keys()):
        if key not in after:
            out.only_old.append(key)
            continue
        if key not in before:
            out.only_new.append(key)
            continue
        was, now = before[key]["verdict"], after[key]["verdict"]
        if SKIP in (was, now):
            out.skipped += 1
            continue
        change = Change(key[0], column(after[key]), was, now, after[key].get("evidence", ""))
        if was not in BAD and now in BAD:
            out.regressions.append(change)
        elif was in BAD and now in HOLDS:
            out.improvements.append(change)
        elif was in HOLDS and now in HOLDS and was != now:
            out.mechanism_changes.append(change)
        elif was != now:
            out.changed.append(change)
        elif now in BAD:
            out.known_failures.append(key)
        else:
            out.unchanged_passes += 1
    return out
