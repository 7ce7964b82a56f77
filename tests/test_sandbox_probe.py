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
from conformance.reporting.document import build_document, merge
from conformance.reporting.html import render_html
from conformance.reporting.text import render_markdown, render_terminal

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


def _row(runtime: str, verdict: str = "pass", host: str = "local", **extra: object) -> dict:
    return {"scenario": "s", "runtime": runtime, "host": host, "verdict": verdict, "tags": [], "duration_s": 0.0,
            "evidence": "", **extra}


def test_the_header_says_which_columns_are_sandboxed_and_how_it_was_seen():
    seen = "state pid 9 runs /usr/bin/runsc, not the entrypoint /bin/busybox"
    doc = build_document([_row("runc"), _row("runsc", "other-mechanism", sandboxed=seen), _row("crun", "skip"),
                          _row("runsc", host="qemu://cgroup-v2")],
                         {}, {"runc": {}, "runsc": {}, "crun": {}},
                         hosts={"local": {}, "qemu://cgroup-v2": {}},
                         host_runtimes={"local": {"runc": {}, "runsc": {}, "crun": {}},
                                        "qemu://cgroup-v2": {"runsc": {}}})
    rts = doc["runtimes"]
    assert rts["runsc"]["sandboxed"] == seen and rts["runc"]["sandboxed"] is False
    assert "sandboxed" not in rts["crun"], "a column with nothing judged was never probed"
    assert doc["host_runtimes"]["qemu://cgroup-v2"]["runsc"]["sandboxed"] is False  # per host
    assert merge([doc])["runtimes"]["runsc"]["sandboxed"] == seen
    md = render_markdown(doc)
    assert f"| yes: {seen} (probe:" in md and "| no |" in md
    assert "(sandboxed)" in render_terminal(doc) and seen in render_html(doc)


def test_the_probe_travels_with_a_remote_execution(tmp_path):
    from conformance.catalog.loader import load_scenarios
    from conformance.model.records import Execution, Observation, SandboxProbe
    from tests.conftest import PID1, write_scenarios

    (scenario,) = load_scenarios(write_scenarios(tmp_path, {"s.yaml": PID1}) / "s.yaml")
    done = Execution(observation=Observation(exit=0, sandboxed="seen"), sandbox=SandboxProbe(True, "seen"))
    back = Execution.from_json(done.to_json(scenario), scenario)
    assert back.sandbox == SandboxProbe(True, "seen") and back.observation and back.observation.sandboxed == "seen"
