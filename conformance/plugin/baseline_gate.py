"""``--baseline OLD.json``: the session fails on regressions, and only on them.

The comparison itself is reporting/baseline.py (also ``python -m conformance
diff``); this is the pytest side, which decides the session's exit status.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conformance.reporting.baseline import BaselineError, Comparison, Key, compare, label, load

from .stash import recorded_result


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
        result = recorded_result(report)
        # a negative control, an invalid file (or a duplicate id) is never a cell a baseline can accept
        if result is None or result.get("disabled") or result.get("invalid") or report.when != "call":
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
                                            "the session: " + ", ".join(label(k) for k in new))
            else:
                terminalreporter.write_line(f"the {len(self.failed_cells)} failing cell(s) failed in the baseline "
                                            "too: accepted")
        if self.other_failures:
            terminalreporter.write_line(f"{self.other_failures} failure(s) outside the matrix (negative controls, "
                                        "invalid scenario files) fail the session whatever the baseline says")
