"""The regression gate: compare a run's matrix with a saved one.

A *cell* is one scenario on one runtime and host.  Between a baseline and a
new matrix a cell

- **regressed** when it passed in the baseline and now fails or errors,
- **improved** when it failed or errored and now passes,
- **changed** when it went between fail and error (listed, not judged),
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
from typing import Any

import pytest

from .matrix import SCHEMA_VERSION, column

BAD = ("fail", "error")
Key = tuple  # (scenario, runtime, host)


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
                f"{len(self.changed)} changed between fail and error, {len(self.known_failures)} known failure(s), "
                f"{self.unchanged_passes} unchanged pass(es); ignored: {self.skipped} skipped in either run, "
                f"{len(self.only_old)} only in the baseline, {len(self.only_new)} only in this run")

    def render(self, old_name: str = "baseline", new_name: str = "this run") -> str:
        """Readable text: regressions first, each with the new evidence."""
        lines = [f"comparing {new_name} with {old_name}"]
        lines += [f"  {v}" for v in self.versions]
        if self.regressions:
            lines.append(f"REGRESSIONS ({len(self.regressions)}): passed in {old_name}, not now")
            for c in self.regressions:
                lines.append(f"  ✗ {c.line()}")
                if c.evidence:
                    lines.append("      " + c.evidence.strip().replace("\n", "\n      "))
        else:
            lines.append("no regressions")
        if self.improvements:
            lines.append(f"improvements ({len(self.improvements)}): failed in {old_name}, pass now")
            lines += [f"  ✓ {c.line()}" for c in self.improvements]
        if self.changed:
            lines.append(f"changed between fail and error ({len(self.changed)}):")
            lines += [f"  ~ {c.line()}" for c in self.changed]
        if self.only_new:
            lines.append(f"not in {old_name} ({len(self.only_new)}): " + ", ".join(_label(k) for k in self.only_new))
        if self.only_old:
            lines.append(f"not run now ({len(self.only_old)}): " + ", ".join(_label(k) for k in self.only_old))
        lines.append(self.summary_line())
        return "\n".join(lines)


def _label(key: Key) -> str:
    scenario, runtime, host = key
    return f"{scenario} on {runtime if host == 'local' else f'{runtime}@{host}'}"


def _key_of(change: Change) -> Key:
    runtime, _, host = change.column.partition("@")
    return (change.scenario, runtime, host or "local")


def load(path: Path | str) -> dict[str, Any]:
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
    return doc


def _cells(doc: dict[str, Any]) -> dict[Key, dict[str, Any]]:
    return {(r["scenario"], r["runtime"], r.get("host", "local")): r for r in doc["results"]}


def _versions(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    lines = []
    for name, rt in new.get("runtimes", {}).items():
        was = old.get("runtimes", {}).get(name)
        if was is not None and was.get("version") != rt.get("version"):
            lines.append(f"{name}: version {was.get('version')} → {rt.get('version')}")
    return lines


def compare(old: dict[str, Any], new: dict[str, Any]) -> Comparison:
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
        if "skip" in (was, now):
            out.skipped += 1
            continue
        change = Change(key[0], column(after[key]), was, now, after[key].get("evidence", ""))
        if was == "pass" and now in BAD:
            out.regressions.append(change)
        elif was in BAD and now == "pass":
            out.improvements.append(change)
        elif was != now:
            out.changed.append(change)
        elif now in BAD:
            out.known_failures.append(key)
        else:
            out.unchanged_passes += 1
    return out


# -- the pytest side: --baseline ------------------------------------------------
class BaselineGate:
    """Registered by the plugin when ``--baseline`` is given (on the controller only).

    After the matrix is written, compares it with the baseline and decides
    the session's exit status: regressions fail it; failures the baseline
    already had do not.
    """

    def __init__(self, config: pytest.Config, path: str) -> None:
        self.config = config
        self.path = Path(path)
        try:
            self.old = load(self.path)
        except BaselineError as exc:
            raise pytest.UsageError(f"--baseline {exc}") from None
        self.comparison: Comparison | None = None
        self.failed_cells: list[Key] = []   # matrix cells whose items failed
        self.other_failures = 0             # failed items that are not matrix cells

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.failed:
            return
        result = next((json.loads(v) for k, v in report.user_properties if k == "conformance_result"), None)
        if result is None or result.get("disabled") or report.when != "call":
            self.other_failures += 1
        else:
            self.failed_cells.append((result["scenario"], result["runtime"], result.get("host", "local")))

    @pytest.hookimpl(trylast=True)  # after the matrix reporter built the document
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        reporter = self.config.pluginmanager.get_plugin("conformance-matrix")
        doc = getattr(reporter, "doc", None)
        if doc is None:
            return
        self.comparison = compare(self.old, doc)
        out = Path(self.config.getoption("matrix_dir")) / "baseline-diff.txt"  # for CI job summaries
        out.write_text(self.comparison.render(str(self.path), "this run") + "\n")
        if not self.comparison.ok:
            if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
                session.exitstatus = pytest.ExitCode.TESTS_FAILED  # (an interruption keeps its own status)
            return
        explained = self.comparison.accepted()
        unexplained = [k for k in self.failed_cells if k not in explained]
        if session.exitstatus == pytest.ExitCode.TESTS_FAILED and not unexplained and not self.other_failures:
            session.exitstatus = pytest.ExitCode.OK  # every failure is one the baseline already had

    @pytest.hookimpl(trylast=True)  # below the matrix
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.comparison is None:
            return
        terminalreporter.section("baseline comparison", red=not self.comparison.ok, green=self.comparison.ok)
        terminalreporter.write_line(self.comparison.render(str(self.path), "this run"))
        if self.comparison.ok and self.failed_cells:
            explained = self.comparison.accepted()
            new = [k for k in self.failed_cells if k not in explained]
            if new:
                terminalreporter.write_line(f"failing cells the baseline does not know ({len(new)}) still fail "
                                            "the session: " + ", ".join(_label(k) for k in new))
            else:
                terminalreporter.write_line(f"the {len(self.failed_cells)} failing cell(s) failed in the baseline "
                                            "too: accepted")
        if self.other_failures:
            terminalreporter.write_line(f"{self.other_failures} failure(s) outside the matrix (negative controls, "
                                        "invalid scenario files) fail the session whatever the baseline says")
