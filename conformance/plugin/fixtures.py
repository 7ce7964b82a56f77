"""A running busybox container as a testinfra Host, for tests written in Python.

The fixture ``container_host`` starts a container (the base config.json plus
``container_patch``, entrypoint ``cat``, which lives until its stdin closes)
on ``container_runtime`` and yields a testinfra ``Host`` whose commands run
inside it through the runtime's ``exec``::

    def test_hostname(container_host):
        assert container_host.sysctl("kernel.hostname") == "conformance"
        assert container_host.process.get(comm="cat").pid == 1

    @pytest.mark.parametrize("container_runtime", ["ref", "runc"])
    @pytest.mark.parametrize("container_patch", [{"hostname": "web"}])
    def test_patched(container_host): ...

``container_runtime`` defaults to the first ``--runtime`` (else ``ref``),
``container_patch`` to no change; a test overrides either by parametrizing
it.  The container, its bundle and cgroups are removed when the test ends,
however it ends; the work dir and state roots with the run (the plugin's
session for this machine).

testinfra modules that work on the busybox root: file, mount_point,
interface (exists, addresses, names — not link/routes: no ``ip --json``),
sysctl, user, group and process (the last two through the small adaptations
in ``testinfra_backend``), and ``host.run``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import pytest
import testinfra.host

from conformance.host import cgroupfs, lifecycle
from conformance.host.bundle import build
from conformance.host.session import RunSession
from conformance.host.testinfra_exec import container_host as _host_for
from conformance.hosts.targets import LocalTarget
from conformance.model.scenario import Expectations, Scenario

from .stash import targets_key

START_TIMEOUT_S = 20.0


@contextlib.contextmanager
def running_container(session: RunSession, runtime: str, patch: dict[str, Any] | None = None,
                      args: Sequence[str] = ("cat",), disabled: tuple[str, ...] = ()
                      ) -> Iterator[testinfra.host.Host]:
    """Create and start a container; yield a Host inside it; then remove everything it made."""
    driver = session.driver(runtime, disabled)
    cid = session.new_container_id()
    spec = Scenario(id="container-host", title="container_host", tags=(), controls=(), args=tuple(args),
                    expect=Expectations(), path=Path("<container_host>"), line=0, patch=patch or {})
    bundle = build(spec, cid, session.workdir, driver.spec_version, {}, driver.bundle_needs)
    try:
        with open(bundle.path / "stdout", "wb") as out, open(bundle.path / "stderr", "wb") as err:
            # leaving ends `cat` (stdin closed), waits for it, deletes it; an exception deletes it at once
            with lifecycle.running(driver, bundle.path, cid, out, err, START_TIMEOUT_S):
                yield _host_for(driver.exec_argv(cid), cid)
    finally:
        cgroupfs.remove_leftovers(bundle.config["linux"].get("cgroupsPath") or "")  # none: the runtime's own
        bundle.remove()


@pytest.fixture(scope="session")
def container_session(pytestconfig: pytest.Config) -> RunSession:
    """The run's own session on this machine (work dir, state roots), which the plugin removes at the end."""
    local = pytestconfig.stash[targets_key].get("local")
    if not isinstance(local, LocalTarget):
        raise pytest.UsageError(f"container_session: this machine could not be set up: {local.describe([])}")
    return local.session


@pytest.fixture
def container_runtime(request: pytest.FixtureRequest) -> str:
    given = request.config.getoption("runtime", None) or ["ref"]
    return str(given[0]).split(",")[0].strip()


@pytest.fixture
def container_patch() -> dict[str, Any]:
    return {}


@pytest.fixture
def container_host(container_session: RunSession, container_runtime: str,
                   container_patch: dict[str, Any]) -> Iterator[testinfra.host.Host]:
    """A testinfra Host inside a running busybox container (see the module's docstring)."""
    with running_container(container_session, container_runtime, container_patch) as host:
        yield host
