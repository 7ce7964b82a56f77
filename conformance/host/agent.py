"""The harness's hands on another host: ``python3 agent.pyz OP BASE64-JSON``.

The harness (where pytest runs) ships this package as one zip file to a
remote host and calls it once per scenario: it checks the host's
requirements, builds the bundle there, runs the runtime there, observes
there, removes everything it made, and prints one JSON line.  It needs only
the Python standard library, so any host with python3 can take part.

Ops: ``describe`` (host profile and runtime versions as seen on that host),
``execute`` (one scenario on one runtime).
"""
from __future__ import annotations

import base64
import json
import os
import sys
from typing import Any

from conformance.model.errors import RuntimeNotFound
from conformance.model.records import HostDescription, RuntimeEntry, SandboxProbe
from conformance.model.scenario import Scenario

from . import drivers, hostinfo, rootless_cgroup
from .drivers.rootless import USER_ENV as ROOTLESS_USER_ENV
from .executor import execute
from .runtimes import REF_ENV
from .session import RunSession


def describe(request: dict[str, Any]) -> HostDescription:
    """This host's profile and each requested runtime as it would be driven here."""
    runtimes: dict[str, RuntimeEntry] = {}
    for name in request["runtimes"]:
        try:
            column, entry = drivers.describe(name, request.get("flags", {}))
            runtimes[column] = entry
        except RuntimeNotFound as exc:
            runtimes[name] = {"path": None, "version": None, "error": str(exc)}
    profile = dict(hostinfo.profile())
    if any(drivers.parse(name).lane == drivers.RootlessDriver.lane for name in request["runtimes"]):
        profile["rootless_cgroups"] = rootless_cgroup.plan()  # whether this host delegated cgroups
    return {"profile": profile, "runtimes": runtimes}


def run_one(request: dict[str, Any]) -> dict[str, Any]:
    scenario = Scenario.from_json(request["scenario"])
    session = RunSession(request.get("flags", {}))
    try:
        if request.get("sandbox"):  # an earlier call probed this runtime on this host: not again
            session.know_sandbox(request["runtime"], SandboxProbe(**request["sandbox"]))
        done = execute(scenario, request["runtime"], tuple(request.get("disabled", ())), session)
    finally:
        session.close()
    return done.to_json(scenario)


OPS = {"describe": describe, "execute": run_one}


def _ref_from_this_zip() -> str | None:
    """A launcher for the reference runtime carried in this zip (when the harness's own is not here)."""
    here = os.path.abspath(sys.argv[0])
    if not here.endswith(".pyz") or not os.path.isfile(here):
        return None
    launcher = here + ".ref"
    if not os.path.exists(launcher):
        with open(launcher, "w") as f:
            f.write(f'#!/bin/sh\nexec {sys.executable} -I -S {here} runtime-ref "$@"\n')
        os.chmod(launcher, 0o755)
    return launcher


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "runtime-ref":
        from runtime_ref.cli import main as runtime_ref_main  # carried in the same zip

        return runtime_ref_main(args[1:])
    if len(args) != 2 or args[0] not in OPS:
        print(f"usage: agent {{{','.join(OPS)}}} BASE64-JSON", file=sys.stderr)
        return 2
    request = json.loads(base64.b64decode(args[1]))
    if request.get("tag"):
        os.environ["OCI_CONFORMANCE_TAG"] = request["tag"]
    if request.get("rootless_user"):  # --rootless-user: the same name on every host
        os.environ[ROOTLESS_USER_ENV] = request["rootless_user"]
    if not os.environ.get(REF_ENV):
        if request.get("ref") and os.access(request["ref"], os.X_OK):
            os.environ[REF_ENV] = request["ref"]  # the same files as where pytest runs (a guest's shared root)
        else:
            os.environ[REF_ENV] = _ref_from_this_zip() or ""
    print(json.dumps(OPS[args[0]](request)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
