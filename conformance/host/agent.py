"""The harness's hands on another host: ``python3 agent.pyz serve``, kept open for a session.

The harness (where pytest runs) ships this package as one zip file to a
remote host and starts it once per host and session over the connection
testinfra's backend already has (an ssh channel, an ssh process, a local
process).  It then sends one JSON line per scenario on the agent's stdin and
reads one JSON line back: the agent checks the host's requirements, builds
the bundle there, runs the runtime there, observes there, removes what the
scenario made, and answers.  One ``RunSession`` lives as long as the agent,
so what a session learns once (runtime versions, the sandbox probe, the
cached rootfs and its reusable copies) is learned once per host, as locally.
It needs only the Python standard library, so any host with python3 can take
part.

The protocol, one JSON object per line:
  agent → ``{"hello": {"pid": N, "python": "3.11.2"}}`` once started;
  harness → ``{"op": "describe"|"execute", ...request}``;
  agent → ``{"answer": ...}`` or ``{"error": "why"}`` (the request failed; the agent goes on).
End of input (the harness closed the channel, or died: Ctrl-C, a lost
connection) and SIGTERM/SIGHUP end the agent at once, even in the middle of a
scenario: every container, state root and bundle it made is removed, and with
``--cleanup`` the zip (and the launcher made beside it) too.

``python3 agent.pyz OP BASE64-JSON`` still answers one request and exits
(a host whose connection cannot carry a kept-open process).  Ops:
``describe`` (host profile and runtime versions as seen on that host),
``execute`` (one scenario on one runtime).
"""
from __future__ import annotations

import base64
import json
import os
import signal
import sys
import threading
from typing import IO, Any, Callable

from conformance.model.errors import RuntimeNotFound
from conformance.model.records import HostDescription, RuntimeEntry, SandboxProbe
from conformance.model.scenario import Scenario

from . import drivers, hostinfo, rootless_cgroup
from .bare import bare_runs
from .executor import execute
from .rootless_user import USER_ENV as ROOTLESS_USER_ENV
from .runtimes import REF_ENV
from .session import RunSession, sweep_dead


def describe(request: dict[str, Any], session: RunSession | None = None) -> HostDescription:
    """This host's profile and each requested runtime as it would be driven here (as ``session``
    resolved it, when one is given: a session's flags are the requests' own)."""
    runtimes: dict[str, RuntimeEntry] = {}
    for name in request["runtimes"]:
        try:
            column, entry = drivers.describe(name, request.get("flags", {}), session.profile if session else None)
            runtimes[column] = entry
        except RuntimeNotFound as exc:
            runtimes[name] = {"path": None, "version": None, "error": str(exc)}
    profile = dict(hostinfo.profile())
    if any(drivers.parse(name).lane == drivers.ROOTLESS_LANE for name in request["runtimes"]):
        profile["rootless_cgroups"] = rootless_cgroup.plan()  # whether this host delegated cgroups
    return {"profile": profile, "runtimes": runtimes}


def run_one(request: dict[str, Any], session: RunSession | None = None) -> dict[str, Any]:
    """One scenario on one runtime; in the session given (kept open), or in one of its own."""
    scenario = Scenario.from_json(request["scenario"])
    own = session is None
    session = session or RunSession(request.get("flags", {}))
    try:
        if request.get("sandbox"):  # the harness knows this runtime's probe from an earlier agent: not again
            session.know_sandbox(request["runtime"], SandboxProbe(**request["sandbox"]))
        done = execute(scenario, request["runtime"], tuple(request.get("disabled", ())), session)
    finally:
        if own:
            session.close()
    return done.to_json(scenario)


def bare(request: dict[str, Any], session: RunSession | None = None) -> list[float | None]:
    """The benchmarks' yardstick on this host: one bare ``RUNTIME run`` of each scenario's bundle (bare.py)."""
    own = session is None
    session = session or RunSession(request.get("flags", {}))
    try:
        return bare_runs([Scenario.from_json(doc) for doc in request["scenarios"]], request["runtime"], session)
    finally:
        if own:
            session.close()


Op = Callable[[dict[str, Any], "RunSession | None"], Any]
OPS: dict[str, Op] = {"describe": describe, "execute": run_one, "bare": bare}


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


def _set_up(request: dict[str, Any]) -> None:
    """The run's tag and the reference runtime's launcher, from the harness's first request."""
    if request.get("tag"):
        os.environ["OCI_CONFORMANCE_TAG"] = request["tag"]
    if request.get("rootless_user"):  # --rootless-user: the same name on every host
        os.environ[ROOTLESS_USER_ENV] = request["rootless_user"]
    if not os.environ.get(REF_ENV):
        if request.get("ref") and os.access(request["ref"], os.X_OK):
            os.environ[REF_ENV] = request["ref"]  # the same files as where pytest runs (a guest's shared root)
        else:
            os.environ[REF_ENV] = _ref_from_this_zip() or ""


# -- serve: kept open -------------------------------------------------------------------
class _Stop(BaseException):
    """End of input or a stop signal: unwind whatever runs, clean up, exit."""


def _stop(signum: int, frame: Any) -> None:
    raise _Stop(f"signal {signum}")


def _private_stdio() -> tuple[IO[bytes], IO[bytes]]:
    """The protocol's own streams; fd 0 becomes /dev/null and fd 1 the error stream.

    A runtime or a probe that inherits the agent's stdio must neither eat a
    request nor write into an answer.
    """
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return requests, answers


class _Inbox:
    """Reads request lines in a thread, so the end of input is noticed while a scenario runs."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.lines: list[bytes] = []
        self.ready = threading.Condition()
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in iter(self.stream.readline, b""):
            with self.ready:
                self.lines.append(line)
                self.ready.notify()
        with self.ready:
            self.closed = True
            self.ready.notify()
        os.kill(os.getpid(), signal.SIGTERM)  # the harness is gone: stop now, even mid-scenario

    def next(self) -> bytes | None:
        with self.ready:
            while not self.lines and not self.closed:
                self.ready.wait()
            return self.lines.pop(0) if self.lines else None


def _answer(request: dict[str, Any], session: RunSession) -> dict[str, Any]:
    op = OPS.get(str(request.get("op")))
    if op is None:
        return {"error": f"unknown op {request.get('op')!r} (known: {', '.join(OPS)})"}
    try:
        return {"answer": op(request, session)}
    except Exception as exc:  # the request failed, the agent goes on: say where
        import traceback  # only here: ~60 ms of a guest's first start under emulation (with linecache, tokenize)

        return {"error": f"{type(exc).__name__}: {exc}; {traceback.format_exc(limit=-3).strip()[-600:]}"}


def serve(cleanup: bool) -> int:
    """Answer requests until the input ends; then remove everything this agent made."""
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _stop)
    session: RunSession | None = None
    try:
        requests, answers = _private_stdio()
        answers.write(json.dumps({"hello": {"pid": os.getpid(), "python": sys.version.split()[0]}}).encode() + b"\n")
        inbox = _Inbox(requests)
        while True:
            line = inbox.next()
            if line is None:
                break
            try:
                request = json.loads(line)
            except ValueError as exc:
                answers.write(json.dumps({"error": f"not a JSON request line: {exc}"}).encode() + b"\n")
                continue
            if session is None:
                _set_up(request)
                if request.get("tag"):  # an agent of this run killed before (it hung): remove what it left
                    sweep_dead(request["tag"])
                session = RunSession(request.get("flags", {}))
            answers.write(json.dumps(_answer(request, session)).encode() + b"\n")
    except (_Stop, BrokenPipeError):
        pass
    finally:
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)  # cleanup is not cut short by a second signal
        if session is not None:
            session.close()
        if cleanup:
            _remove_own_files()
    return 0


def _remove_own_files() -> None:
    here = os.path.abspath(sys.argv[0])
    for path in (here, here + ".ref"):
        try:
            os.unlink(path)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "runtime-ref":
        from runtime_ref.cli import main as runtime_ref_main  # carried in the same zip

        return runtime_ref_main(args[1:])
    if args and args[0] == "serve":
        return serve(cleanup="--cleanup" in args[1:])
    if len(args) != 2 or args[0] not in OPS:
        print(f"usage: agent serve [--cleanup] | agent {{{','.join(OPS)}}} BASE64-JSON", file=sys.stderr)
        return 2
    request = json.loads(base64.b64decode(args[1]))
    _set_up(request)
    print(json.dumps(OPS[args[0]](request, None)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
