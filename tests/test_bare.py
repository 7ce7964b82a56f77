"""The benchmarks' yardstick (conformance/host/bare.py): one bare ``RUNTIME run`` of a bundle, timed.

A yardstick that times a refusal instead of a run would flatter the harness:
a process with a terminal gets one (runc's foreground ``run`` opens /dev/tty,
and refuses at once without it), and its size is the config's.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.host.bare import timed_run
from conformance.host.bundle import build
from conformance.model.scenario import Expectations, Scenario
from tests.conftest import REF_AND_RUNC


@pytest.mark.parametrize("runtime", REF_AND_RUNC)
@pytest.mark.parametrize("terminal", [None, (37, 91)])
def test_a_bare_run_runs_the_container_with_a_terminal_when_it_has_one(session, runtime, terminal):
    """The entrypoint runs to its end (its output is there), on a terminal of the config's size when
    the process has one (then `read _` returns on the line typed in advance), on pipes otherwise."""
    driver = session.driver(runtime)
    if terminal is not None and runtime == "ref":
        pytest.skip("runtime-ref's foreground run relays no terminal (it needs --console-socket, as create does)")
    cid = session.new_container_id()
    spec = Scenario(id="bare", title="bare", tags=(), controls=(),
                    args=("sh", "-c", "read _; stty size 2>&1 || echo no-tty; echo ran"), expect=Expectations(),
                    path=Path("<test_bare>"), line=0)
    bundle = build(spec, cid, session.workdir, driver.spec_version, {})
    if terminal is not None:
        bundle.config["process"].update(terminal=True, consoleSize={"height": terminal[0], "width": terminal[1]})
        (bundle.path / "config.json").write_text(json.dumps(bundle.config))
    try:
        out_path = bundle.path / "stdout"
        with open(out_path, "wb") as out, open(bundle.path / "stderr", "wb") as err:
            elapsed = timed_run(driver.profile.argv(driver.root, "run", "--bundle", str(bundle.path), cid),
                                out.fileno(), err.fileno(), 20, terminal)
        said = out_path.read_text().replace("\r\n", "\n")
        assert elapsed > 0 and said.endswith("ran\n"), (said, (bundle.path / "stderr").read_text())
        assert ("37 91\n" in said) if terminal else ("no-tty" in said)
    finally:
        driver.delete(cid, force=True)
        bundle.remove()
