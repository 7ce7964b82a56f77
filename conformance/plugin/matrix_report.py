"""The matrix reporter: gathers results on the controller and writes the matrix once."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conformance.hosts.targets import HostError, Target
from conformance.model.records import HostDescription
from conformance.reporting.rows import Matrix, ResultRow

from .stash import hosts_key, recorded_result, runtimes_key, targets_key


def _describe(target: Target, runtimes: list[str]) -> HostDescription:
    """A host's profile and runtime versions, as seen on that host (an error stays readable)."""
    try:
        return target.describe(runtimes)
    except HostError as exc:
        return {"profile": {"error": str(exc)}, "runtimes": {}}


#: where an xdist worker hands the controller the other hosts it described (its ``workeroutput``)
HOSTS_OUTPUT = "conformance_hosts"


class WorkerHostReport:
    """On an xdist worker: describe the other hosts this worker reached, for the controller.

    Without it the controller, which writes the matrix, would set up each of
    them again only to describe it (for a ``qemu://`` guest: one more boot
    after all the cells ran).
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        targets, names = self.config.stash[targets_key], self.config.stash[runtimes_key]
        self.config.workeroutput[HOSTS_OUTPUT] = {  # type: ignore[attr-defined]
            spec: _describe(targets.get(spec), names) for spec in targets.made() if spec != "local"}


class MatrixReporter:
    """Gathers results where the matrix is written (the xdist controller, or the only process).

    Results arrive as report user properties, which xdist ships from workers to
    the controller, so one code path serves serial and parallel runs.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[ResultRow] = []
        self.written: list[Path] = []
        self.doc: Matrix | None = None
        #: hosts the xdist workers described (WorkerHostReport), by spec: not set up again here
        self.described: dict[str, HostDescription] = {}

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        for spec, description in getattr(node, "workeroutput", {}).get(HOSTS_OUTPUT, {}).items():
            if spec not in self.described or "error" in self.described[spec]["profile"]:  # a healthy one wins
                self.described[spec] = description

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = recorded_result(report) if report.when == "call" else None
        if result is not None:
            self.results.append(result)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.results:
            return
        targets = self.config.stash[targets_key]
        names = self.config.stash[runtimes_key]
        described = {spec: self.described.get(spec) or _describe(targets.get(spec), names)
                     for spec in self.config.stash[hosts_key]}
        local = described.get("local") or _describe(targets.get("local"), names)
        # the writers (tabulate, the HTML page) are loaded here, where the matrix is written: an xdist
        # worker or a --co run never loads them
        from conformance.reporting.document import build_document
        from conformance.reporting.files import write_all

        self.doc = build_document(self.results, local["profile"], local["runtimes"],
                                         hosts={spec: d["profile"] for spec, d in described.items()},
                                         host_runtimes={spec: d["runtimes"] for spec, d in described.items()})
        self.written = write_all(self.doc, Path(str(self.config.getoption("matrix_dir"))))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.doc is None:
            return
        from conformance.reporting.text import render_terminal  # loaded by write_all already

        terminalreporter.section("conformance matrix")
        terminalreporter.write_line(render_terminal(self.doc))
        terminalreporter.write_line("written: " + ", ".join(str(p) for p in self.written))
