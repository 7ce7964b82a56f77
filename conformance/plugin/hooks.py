"""The pytest plugin: options, set-up and clean-up, and where collection starts.

``pytest conformance --runtime=runc`` collects every YAML file under
``scenarios/`` (or ``--scenarios DIR``); each scenario becomes one item per
runtime, named ``<scenario-id>[<runtime>@<host>]`` and marked with its tags
(so ``-m pid`` selects).  Each item records its result as a user property,
which also travels from xdist workers to the controller; the controller
assembles the matrix once, at the end.  Items live in items.py, the matrix
reporter in matrix_report.py, the shared stash keys in stash.py.
"""
from __future__ import annotations

import atexit
import functools
import gc
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.catalog.schema import scenario_schema
from conformance.host.drivers.procs import set_spin
from conformance.host.rootless_user import USER_ENV as ROOTLESS_USER_ENV
from conformance.host.session import sweep_dead
from conformance.hosts.connect import Targets, expand
from conformance.hosts.targets import HostError
from conformance.model.scenario import id_clashes

from .items import Catalog, InvalidScenarioItem, ScenarioFile, ScenarioItem, tags_of
from .matrix_report import MatrixReporter, WorkerHostReport
from .order import longest_first
from .stash import PACKAGE_DIR, hosts_key, runtimes_key, scenarios_dir, targets_key


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
    group.addoption("--rootless-user", default=None, metavar="NAME",
                    help="the user a NAME:rootless runtime runs as (an existing, unprivileged one, used as it is; "
                         "default: a user made for the session and removed after it)")
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


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # fixtures for tests written in Python: container_host, a testinfra Host inside a running container
    config.pluginmanager.import_plugin("conformance.plugin.fixtures")
    tags = scenario_schema()["properties"]["tags"]["items"]["enum"]
    for tag in tags:
        config.addinivalue_line("markers", f"{tag}: scenarios exercising {tag}")
    config.addinivalue_line("markers", "control: negative controls (ref with the scenario's switches off)")
    if config.getoption("qemu_kernel"):
        os.environ["OCI_CONFORMANCE_QEMU_KERNEL"] = config.getoption("qemu_kernel")  # read where guests boot
    if config.getoption("rootless_user"):
        os.environ[ROOTLESS_USER_ENV] = config.getoption("rootless_user")  # read where the runtimes run
    config.stash[runtimes_key] = _runtime_names(config)
    config.stash[hosts_key] = _host_specs(config)
    tag = os.environ.get("OCI_CONFORMANCE_TAG") or secrets.token_hex(4)
    os.environ["OCI_CONFORMANCE_TAG"] = tag  # one tag for this process's objects on every host
    config.stash[targets_key] = Targets(_runtime_flags(config), _testinfra_options(config), tag)
    if not hasattr(config, "workerinput"):  # xdist workers only run items; the controller reports
        _sweep_killed_runs()
        config.pluginmanager.register(MatrixReporter(config), "conformance-matrix")
        if config.getoption("baseline"):
            from .baseline_gate import BaselineGate  # the comparison's code only when --baseline asks for it

            config.pluginmanager.register(BaselineGate(config, config.getoption("baseline")), "conformance-baseline")
    else:
        config.pluginmanager.register(WorkerHostReport(config), "conformance-worker-hosts")
    _spin_only_with_a_spare_cpu(config)
    config.add_cleanup(gc.unfreeze)  # see pytest_collection_finish (a cleanup added here runs after pytest's)
    if hasattr(signal, "SIGTERM") and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # so cleanup runs on `kill`/CI timeouts


def _spin_only_with_a_spare_cpu(config: pytest.Config) -> None:
    """An xdist worker among as many workers as CPUs waits for runtimes without polling first
    (procs.SPIN_S): every CPU is busy with a worker or a runtime, and a poll takes its time from
    the runtime it waits for."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    if workers >= len(os.sched_getaffinity(0)):
        set_spin(0.0)


def _sweep_killed_runs() -> None:
    """What runs killed here (SIGKILL, no cleanup) left — containers, daemons, mounts, state roots, work
    dirs, found by their dead pid — is removed before this run makes its own (host/session.py)."""
    removed = sweep_dead()
    if removed:
        print(f"oci-conformance: removed what {len([r for r in removed if r.startswith('/run/')])} killed run(s) "
              f"left: {', '.join(removed)[:600]}", file=sys.stderr)


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


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """What exists once collection is done (modules, plugins, the scenarios and items) lives until the
    session ends: in a session that runs scenarios, it is moved out of the garbage collector's sight
    (``gc.freeze``); other test suites of the same environment are left as they are.

    Every full collection otherwise walks all of it again: one during a serial run of the catalog and
    the two pytest makes at its end (its unraisable-exception check) took ~54 ms of a run here, ~5 ms
    frozen.  Garbage is still freed by reference counting; only a reference cycle among these objects
    would wait for ``gc.unfreeze``, which the session's clean-up calls after pytest's last collection
    (pytest_configure adds it before pytest's own clean-up, and clean-ups run last-added first).

    At the interpreter's exit everything is frozen again (``_freeze_at_exit``).
    """
    if any(isinstance(item, (ScenarioItem, InvalidScenarioItem)) for item in session.items):
        gc.freeze()
        _freeze_at_exit()


@functools.cache  # one handler per process, however many sessions it runs
def _freeze_at_exit() -> None:
    """Once the process ends, its objects go with it: the collections the interpreter makes while it
    shuts down would walk them all (~50 ms of a serial run's ~110 ms after its last scenario, measured
    here) to free what the exit frees anyway.  Frozen at exit (an atexit handler: after pytest.main
    returned, also when it ran inside another process), they are skipped; the modules are still torn
    down, and every clean-up of the run happened before (the session's close, in pytest_unconfigure)."""
    atexit.register(gc.freeze)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """A scenario item learns which item runs after it (ScenarioItem.precedes); pytest then runs it."""
    if isinstance(item, ScenarioItem):
        item.precedes(nextitem)


@pytest.hookimpl(tryfirst=True)  # before -m/-k deselect: every file takes part, error items keep their marks
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Scenario ids must be unique across files too: a matrix row is one scenario.

    A file claiming an id that another file claims is invalid, as a duplicate
    inside one file makes it: its items become error items (one per runtime)
    naming both places, in the place of its first item, and the rest of the
    session runs.
    """
    _replace_clashing(items)
    longest_first(items)  # order.py: so that with -n 2 no long cell is handed out last


def _replace_clashing(items: list[pytest.Item]) -> None:
    files = list(dict.fromkeys(item.parent for item in items if isinstance(item, ScenarioItem)))
    clashes = id_clashes([sc for file in files if isinstance(file, ScenarioFile) for sc in file.scenarios])
    if not clashes:
        return
    kept: list[pytest.Item] = []
    replaced: set[Path] = set()
    for item in items:
        file = item.parent
        if not (isinstance(item, ScenarioItem) and isinstance(file, ScenarioFile) and file.path in clashes):
            kept.append(item)
        elif file.path not in replaced:
            replaced.add(file.path)
            kept += file.error_items(clashes[file.path], tags_of(file.scenarios))
    items[:] = kept
