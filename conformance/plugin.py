"""The pytest plugin: options, scenario collection, one item per scenario × runtime × host.

``pytest conformance --runtime=runc`` collects every YAML file under
``scenarios/`` (or ``--scenarios DIR``); each scenario becomes one item per
runtime, named ``<scenario-id>[<runtime>@<host>]`` and marked with its tags
(so ``-m pid`` selects).  Each item records its result as a user property,
which also travels from xdist workers to the controller; the controller
assembles the matrix once, at the end.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
from pathlib import Path
from typing import Any, Iterator

import pytest

from . import matrix
from .errors import ScenarioError
from .hosts import HostError, Targets, expand
from .loader import scenario_schema
from .runtimes import label as runtime_label
from .scenario import Scenario, check_unique_ids, load_scenarios
from .verdict import ERROR, FAIL, PASS, SKIP, Verdict, judge

RESULT_KEY = "conformance_result"
PACKAGE_DIR = Path(__file__).parent
targets_key = pytest.StashKey[Targets]()
runtimes_key = pytest.StashKey[list]()
hosts_key = pytest.StashKey[list]()


# -- options and set-up ------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "container runtime conformance")
    group.addoption("--runtime", action="append", default=[], metavar="NAME",
                    help="runtime to test: ref (default), runc, crun, runsc, or a path to a runc-compatible "
                         "binary; repeat or comma-separate to compare several")
    group.addoption("--runtime-flags", action="append", default=[], metavar="NAME=FLAGS",
                    help="extra global flags for one runtime, e.g. runsc='--debug'")
    group.addoption("--matrix-dir", default="reports", metavar="DIR",
                    help="where matrix.json, matrix.md and matrix.html are written (default: reports/)")
    group.addoption("--controls", action="store_true",
                    help="also run every scenario's negative control: the reference runtime with the scenario's "
                         "switches off, which must make it fail (select only these with -m control)")
    group.addoption("--qemu-kernel", default=None, metavar="PATH|PACKAGE",
                    help="kernel for qemu:// hosts: a bzImage path or a Debian kernel package name "
                         "(default: the newest linux-image-*-amd64-unsigned; env OCI_CONFORMANCE_QEMU_KERNEL)")
    group.addoption("--scenarios", default=None, metavar="DIR",
                    help="scenario directory (default: scenarios/ beside the conformance package)")
    group.addoption("--baseline", default=None, metavar="OLD.json",
                    help="compare the matrix with a saved matrix.json: the session fails on any cell that went "
                         "from pass to fail/error, and only then (failures the baseline had are accepted)")


def _runtime_names(config: pytest.Config) -> list[str]:
    names: list[str] = []
    for value in config.getoption("runtime") or ["ref"]:
        names += [n.strip() for n in value.split(",") if n.strip() and n.strip() not in names]
    return names


def _runtime_flags(config: pytest.Config) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    for value in config.getoption("runtime_flags"):
        name, sep, rest = value.partition("=")
        if not sep:
            raise pytest.UsageError(f"--runtime-flags {value!r}: expected NAME=FLAGS")
        flags.setdefault(name, []).extend(rest.split())
    return flags


def _host_specs(config: pytest.Config) -> list[str]:
    """``--hosts`` (pytest-testinfra's option) as a list; ``local`` when not given."""
    raw = config.getoption("hosts", None) or "local"
    specs = [s.strip() for s in (raw if isinstance(raw, list) else raw.split(",")) if s.strip()]
    try:
        return expand(specs, config.getoption("ansible_inventory", None))
    except HostError as exc:
        raise pytest.UsageError(str(exc)) from None


def _testinfra_options(config: pytest.Config) -> dict[str, Any]:
    names = ("ssh_config", "ssh_identity_file", "ansible_inventory", "force_ansible", "sudo", "sudo_user")
    return {name: config.getoption(name, None) for name in names}


def scenarios_dir(config: pytest.Config) -> Path:
    given = config.getoption("scenarios")
    return Path(given).resolve() if given else PACKAGE_DIR.parent / "scenarios"


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # fixtures for tests written in Python: container_host, a testinfra Host inside a running container
    config.pluginmanager.import_plugin("conformance.containers")
    tags = scenario_schema()["properties"]["tags"]["items"]["enum"]
    for tag in tags:
        config.addinivalue_line("markers", f"{tag}: scenarios exercising {tag}")
    config.addinivalue_line("markers", "control: negative controls (ref with the scenario's switches off)")
    if config.getoption("qemu_kernel"):
        os.environ["OCI_CONFORMANCE_QEMU_KERNEL"] = config.getoption("qemu_kernel")  # read where guests boot
    config.stash[runtimes_key] = _runtime_names(config)
    config.stash[hosts_key] = _host_specs(config)
    tag = os.environ.get("OCI_CONFORMANCE_TAG") or secrets.token_hex(4)
    os.environ["OCI_CONFORMANCE_TAG"] = tag  # one tag for this process's objects on every host
    config.stash[targets_key] = Targets(_runtime_flags(config), _testinfra_options(config), tag)
    if not hasattr(config, "workerinput"):  # xdist workers only run items; the controller reports
        config.pluginmanager.register(MatrixReporter(config), "conformance-matrix")
        if config.getoption("baseline"):
            from .baseline import BaselineGate
            config.pluginmanager.register(BaselineGate(config, config.getoption("baseline")), "conformance-baseline")
    if hasattr(signal, "SIGTERM") and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # so cleanup runs on `kill`/CI timeouts


def pytest_unconfigure(config: pytest.Config) -> None:
    targets = config.stash.get(targets_key, None)
    if targets is not None:
        targets.close()


# -- collection ---------------------------------------------------------------
@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """``pytest conformance`` means: the scenario catalog, not the harness's modules."""
    if path.resolve() == PACKAGE_DIR.resolve():
        return Catalog.from_parent(parent, path=path)
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A scenario file named on the command line (``pytest scenarios/pid.yaml``)."""
    if file_path.suffix in (".yaml", ".yml") and scenarios_dir(parent.config) in file_path.resolve().parents:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class Catalog(pytest.Directory):
    """Every scenario file of the scenario directory."""

    def collect(self) -> Iterator[pytest.Collector]:
        root = scenarios_dir(self.config)
        if not root.is_dir():
            raise pytest.UsageError(f"scenario directory {root} does not exist (see --scenarios)")
        for path in sorted(root.rglob("*.y*ml")):
            yield ScenarioFile.from_parent(self, path=path)


class ScenarioFile(pytest.File):
    """One YAML file: its scenarios × runtimes, or one error item per runtime if it is invalid."""

    def collect(self) -> Iterator[pytest.Item]:
        runtimes, hosts = self.config.stash[runtimes_key], self.config.stash[hosts_key]
        try:
            scenarios = load_scenarios(self.path)
            check_unique_ids(scenarios)
        except ScenarioError as exc:
            for runtime in runtimes:
                yield InvalidScenarioItem.from_parent(self, name=f"{self.path.name}[{runtime_label(runtime)}@local]",
                                                      error=exc, runtime=runtime)
            return
        controls = self.config.getoption("controls")
        for scenario in scenarios:
            items = [ScenarioItem.from_parent(self, name=f"{scenario.id}[{runtime_label(runtime)}@{host}]",
                                              scenario=scenario, runtime=runtime, host=host)
                     for host in hosts for runtime in runtimes]
            if controls:  # negative controls need the reference runtime, which runs here
                label = "+".join(scenario.control)
                items.append(ControlItem.from_parent(self, name=f"{scenario.id}[ref-without-{label}@local]",
                                                     scenario=scenario, runtime="ref", host="local"))
                items[-1].add_marker(pytest.mark.control)
            for item in items:
                for tag in scenario.tags:
                    item.add_marker(getattr(pytest.mark, tag))
                yield item


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Scenario ids must be unique across files too: a matrix row is one scenario."""
    first: dict[str, Scenario] = {}
    for item in items:
        if isinstance(item, ScenarioItem):
            other = first.setdefault(item.scenario.id, item.scenario)
            if other is not item.scenario and other.path != item.scenario.path:
                raise pytest.UsageError(f"{item.scenario.location}: duplicate scenario id "
                                        f"{item.scenario.id!r} (first at {other.location})")


# -- items --------------------------------------------------------------------
class ScenarioFailure(Exception):
    """Raised by an item whose verdict is fail or error; carries the verdict."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.evidence)
        self.verdict = verdict


def _record(item: pytest.Item, result: dict[str, Any]) -> None:
    item.user_properties.append((RESULT_KEY, json.dumps(result)))


class InvalidScenarioItem(pytest.Item):
    def __init__(self, *, error: ScenarioError, runtime: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.error, self.runtime = error, runtime

    def runtest(self) -> None:
        _record(self, {"scenario": str(self.error.path), "runtime": runtime_label(self.runtime), "host": "local",
                       "verdict": ERROR, "tags": [], "duration_s": 0.0, "title": "invalid scenario file",
                       "evidence": str(self.error)})
        raise self.error

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, (self.error.line or 1) - 1, f"invalid scenario: {self.path.name}"


class ScenarioItem(pytest.Item):
    """One scenario on one runtime and host: passes when the property holds."""

    disabled: tuple[str, ...] = ()

    def __init__(self, *, scenario: Scenario, runtime: str, host: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.scenario, self.runtime, self.host = scenario, runtime, host

    def _result(self, verdict: str, evidence: str, duration: float = 0.0, **extra: Any) -> dict[str, Any]:
        sc = self.scenario
        return {"scenario": sc.id, "runtime": runtime_label(self.runtime), "host": self.host, "verdict": verdict,
                "tags": list(sc.tags), "duration_s": round(duration, 4), "evidence": evidence,
                "title": sc.title, "control": list(sc.control), "clause": sc.clause,
                "file": f"{sc.path.name}:{sc.line}",
                **({"disabled": list(self.disabled)} if self.disabled else {}), **extra}

    def runtest(self) -> None:
        target = self.config.stash[targets_key].get(self.host)
        done = target.execute(self.scenario, self.runtime, self.disabled)
        if done.skip:
            _record(self, self._result(SKIP, done.skip))
            pytest.skip(done.skip)
        if done.error or done.observation is None:
            verdict, duration = Verdict(ERROR, done.error or "no observation"), 0.0
        else:
            verdict = judge(self.scenario, done.observation, done.variables)
            duration = done.observation.duration_s
        _record(self, self._result(verdict.verdict, verdict.evidence, duration, oci_version=done.oci_version))
        self._conclude(verdict)

    def _conclude(self, verdict: Verdict) -> None:
        if verdict.verdict != PASS:
            raise ScenarioFailure(verdict)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailure):
            v = excinfo.value.verdict
            lines = [f"{self.scenario.id} on {self.runtime}: {v.verdict.upper()} — {self.scenario.title}",
                     f"  scenario: {self.scenario.location}"]
            lines += [f"  ✗ {c.detail}" for c in v.checks if not c.ok] or [f"  {v.evidence}"]
            return "\n".join(lines)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.scenario.path, self.scenario.line - 1, f"{self.scenario.id} [{self.runtime}@{self.host}]"


class ControlFailure(Exception):
    """A negative control that did not fail: the scenario cannot see its property go missing."""


class ControlItem(ScenarioItem):
    """The scenario on the reference runtime with its control switches off: must FAIL.

    This is what makes a scenario trustworthy: turning off the primitive it is
    about must turn its verdict to fail.  A control that still passes (or that
    errors, which proves nothing) fails this item.
    """

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.disabled = self.scenario.control

    def _conclude(self, verdict: Verdict) -> None:
        if verdict.verdict != FAIL:
            raise ControlFailure(
                f"{self.scenario.location}: with {', '.join(self.disabled)} switched off in ref the scenario "
                f"{'still passes' if verdict.verdict == PASS else 'errors'}, so it does not prove its property "
                f"can fail. Evidence: {verdict.evidence}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ControlFailure):
            return f"negative control not proven: {excinfo.value}"
        return super().repr_failure(excinfo)


# -- results and the matrix ----------------------------------------------------
def _describe(target: Any, runtimes: list[str]) -> dict[str, Any]:
    """A host's profile and runtime versions, as seen on that host (an error stays readable)."""
    try:
        return target.describe(runtimes)
    except HostError as exc:
        return {"profile": {"error": str(exc)}, "runtimes": {}}


class MatrixReporter:
    """Gathers results where the matrix is written (the xdist controller, or the only process).

    Results arrive as report user properties, which xdist ships from workers to
    the controller, so one code path serves serial and parallel runs.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[dict[str, Any]] = []
        self.written: list[Path] = []
        self.doc: dict[str, Any] | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == RESULT_KEY and report.when == "call":
                self.results.append(json.loads(value))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.results:
            return
        targets = self.config.stash[targets_key]
        names = self.config.stash[runtimes_key]
        described = {spec: _describe(targets.get(spec), names) for spec in self.config.stash[hosts_key]}
        local = described.get("local") or _describe(targets.get("local"), names)
        self.doc = matrix.build_document(self.results, local["profile"], local["runtimes"],
                                         hosts={spec: d["profile"] for spec, d in described.items()},
                                         host_runtimes={spec: d["runtimes"] for spec, d in described.items()})
        self.written = matrix.write_all(self.doc, Path(self.config.getoption("matrix_dir")))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.doc is None:
            return
        terminalreporter.section("conformance matrix")
        terminalreporter.write_line(matrix.render_terminal(self.doc))
        terminalreporter.write_line("written: " + ", ".join(str(p) for p in self.written))
