"""The sandbox probe: which runtimes run their containers in a sandbox, found by looking, not by name.

After ``start`` the process a runtime names in ``state`` either runs the
container's entrypoint (runc, crun, ref: host facts about it describe the
container) or something else (gVisor's kernel, a VM monitor: they describe
the sandbox).  Real runtimes, real containers; the "other" runtime is runc
behind a wrapper whose ``state`` names another process, as a sandbox's does.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from conformance.host.session import RunSession

NAMES_ANOTHER_PROCESS = """#!/bin/sh
# runc, except that `state` names a process that is not the container's (as a sandbox's state does):
# the test's own, which runs python
case "$3" in
  state) runc "$@" | sed 's/"pid": *[0-9]*/"pid": {pid}/' ;;
  *) exec runc "$@" ;;
esac
"""


@pytest.fixture
def session():
    s = RunSession()
    yield s
    assert s.close() == []


@pytest.mark.parametrize("runtime", ["ref", "runc", "crun"])
def test_a_namespaces_runtime_runs_the_entrypoint(session, runtime, no_leftovers):
    if runtime != "ref" and shutil.which(runtime) is None:
        pytest.skip(f"{runtime} is not installed")
    found = session.sandbox(runtime)
    assert not found.sandboxed
    assert re.fullmatch(r"state pid \d+ runs the entrypoint /bin/busybox", found.evidence)
    assert session.sandbox(runtime) is found, "probed once per runtime, then kept in its driver"
    assert session.driver(runtime).sandboxed is None


@pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc is not installed")
def test_runsc_is_found_sandboxed(session, no_leftovers):
    found = session.sandbox("runsc")
    assert found.sandboxed
    assert re.fullmatch(r"state pid \d+ runs /\S*runsc\S*, not the entrypoint /bin/busybox", found.evidence)
    assert session.driver("runsc").sandboxed == found.evidence


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc is not installed")
def test_detection_knows_no_runtime_by_name(session, tmp_path, no_leftovers):
    wrapper = tmp_path / "not-runsc"
    wrapper.write_text(NAMES_ANOTHER_PROCESS.replace("{pid}", str(os.getpid())))
    wrapper.chmod(0o755)
    found = session.sandbox(str(wrapper))
    assert found.sandboxed, found.evidence
    assert found.evidence == f"state pid {os.getpid()} runs {os.readlink('/proc/self/exe')}, not the entrypoint /bin/busybox"


def test_a_probe_that_cannot_run_is_not_a_sandbox(session, tmp_path, no_leftovers):
    """The strict reading: when the probe cannot tell, host facts are judged as the container's."""
    broken = tmp_path / "refuses"
    broken.write_text("#!/bin/sh\necho 'no containers today' >&2\nexit 1\n")
    broken.chmod(0o755)
    found = session.sandbox(str(broken))
    assert not found.sandboxed
    assert found.evidence.startswith("not determined") and "no containers today" in found.evidence
    assert not list(Path(session.workdir).glob("cf-*")), "the probe's bundle was removed"
