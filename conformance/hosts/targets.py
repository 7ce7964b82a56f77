"""Where the runtimes run: the local machine, or hosts reached through pytest-testinfra.

``--hosts`` keeps testinfra's meaning (``local``, ``ssh://``, ``paramiko://``,
``ansible://GROUP`` with ``--ansible-inventory``) plus ``qemu://cgroup-v2`` and
``qemu://cgroup-v1``, guests the harness boots itself (conformance/hosts/qemu.py).
A remote host gets the agent (this package as one zip), started once per
session over testinfra's backend and kept open (agent_link.py, channels.py);
a host that cannot be reached turns its scenarios into errors with one
clear line, and the other hosts still run.
"""
from __future__ import annotations

import functools
import importlib.util
import io
import os
import py_compile
import sys
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, cast

from conformance.host import agent
from conformance.host.ahead import Next
from conformance.host.bare import bare_runs
from conformance.host.executor import execute
from conformance.host.rootless_user import USER_ENV as ROOTLESS_USER_ENV
from conformance.host.runtimes import ref_launcher
from conformance.host.session import RunSession
from conformance.model.errors import ConformanceError
from conformance.model.records import Execution, HostDescription, SandboxProbe
from conformance.model.scenario import Scenario

from .agent_link import AgentDied, AgentError, AgentHung, AgentLink, AgentStartFailed, OneShotAgent
from .channels import opener

PACKAGE_DIR = Path(__file__).parent.parent  # the conformance package
#: what an agent gets beyond the scenario's own timeout before it counts as hung: the work around the
#: container (bundle, sandbox probe, a forced delete), each bounded on its own, under emulation too
AGENT_GRACE_S = 60.0
DESCRIBE_TIMEOUT_S = 120.0


class HostError(ConformanceError):
    """A host could not be reached or prepared; names the host."""


class Target(Protocol):
    spec: str

    def execute(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...],
                upcoming: Next | None = None) -> Execution: ...
    def describe(self, runtimes: list[str]) -> HostDescription: ...
    def close(self) -> None: ...


class LocalTarget:
    """This machine: the executor runs in-process."""

    spec = "local"

    def __init__(self, runtime_flags: dict[str, list[str]]) -> None:
        self.runtime_flags = runtime_flags
        self.session = RunSession(runtime_flags)

    def execute(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...],
                upcoming: Next | None = None) -> Execution:
        """``upcoming``: what this host runs next, whose bundle is written while this one runs (host/ahead.py)."""
        return execute(scenario, runtime, disabled, self.session, upcoming)

    def describe(self, runtimes: list[str]) -> HostDescription:
        return agent.describe({"runtimes": runtimes, "flags": self.runtime_flags}, self.session)

    def bare_runs(self, scenarios: list[Scenario], runtime: str) -> list[float | None]:
        """One bare ``RUNTIME run`` per scenario's bundle (host/bare.py): for bench/."""
        return bare_runs(scenarios, runtime, self.session)

    def close(self) -> None:
        left = self.session.close()
        if left:  # said, not silently dropped: a leak is a bug to find (the next run sweeps what it can)
            print(f"oci-conformance: left behind on this host: {', '.join(left)[:800]}", file=sys.stderr)


#: What ships to another host: the layers that run there (standard library only) and the
#: reference runtime.  The harness's own layers (judge, hosts, reporting, plugin) stay here.
AGENT_PARTS = ("__init__.py", "model", "host")


@functools.lru_cache(maxsize=1)
def agent_zip() -> bytes:
    """The host-side layers and the reference runtime as one runnable zip.

    ``python3 agent.pyz serve`` runs the agent; ``python3 -IS agent.pyz runtime-ref …``
    runs the reference runtime, so ``ref`` exists on any host the suite reaches.
    Each module also comes compiled by this Python (unchecked-hash .pyc beside the
    .py, which zipimport prefers): a host running the same Python version does not
    compile the agent at every start (seconds under emulation); another version
    ignores them and compiles the sources.
    """
    buf = io.BytesIO()
    files = [(f"conformance/{p.relative_to(PACKAGE_DIR)}", p) for part in AGENT_PARTS
             for p in ([PACKAGE_DIR / part] if part.endswith(".py") else sorted((PACKAGE_DIR / part).rglob("*.py")))]
    ref = importlib.util.find_spec("runtime_ref")
    if ref is not None and ref.origin:
        ref_dir = Path(ref.origin).parent
        files += [(f"runtime_ref/{p.relative_to(ref_dir)}", p) for p in sorted(ref_dir.rglob("*.py"))]
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, tempfile.TemporaryDirectory() as tmp:
        for name, path in files:
            if "__pycache__" not in path.parts:
                zf.write(path, name)
                zf.writestr(name + "c", _compiled(path, name, Path(tmp) / "out.pyc"))
        zf.writestr("__main__.py", "import sys\nfrom conformance.host.agent import main\nsys.exit(main())\n")
    return buf.getvalue()


def _compiled(source: Path, name: str, scratch: Path) -> bytes:
    py_compile.compile(str(source), cfile=str(scratch), dfile=name, doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return scratch.read_bytes()


class RemoteTarget:
    """A host reached through a testinfra backend; one kept-open agent does the work there.

    The agent is started on first use over the backend's own connection
    (channels.py) and answers one request per scenario (agent_link.py).  An
    agent that dies during a scenario is restarted once and the scenario
    sent again; the cell says so (``Execution.host_note``).  One that gives
    no answer within the scenario's timeout (plus ``grace_s`` for what the
    agent does around the container: bundle, sandbox probe, delete) is
    stopped, the cell is an error saying so, and a new agent is started at
    once for the next scenarios.  When no agent can be started (the host
    stopped answering: a wedged guest, a cut network) the host is broken:
    every remaining cell on it is an error at once, with one line saying
    why, instead of each waiting for its own timeouts.
    """

    def __init__(self, spec: str, backend: Any, runtime_flags: dict[str, list[str]], tag: str,
                 python: str = "python3", grace_s: float = AGENT_GRACE_S) -> None:
        self.spec, self.backend, self.runtime_flags, self.tag = spec, backend, runtime_flags, tag
        self.python, self.grace_s = python, grace_s
        opened = opener(backend)
        self.agent: AgentLink | OneShotAgent = (
            AgentLink(spec, self._run, opened, python, tag, agent_zip()) if opened is not None
            else OneShotAgent(spec, self._run, python, tag, agent_zip()))
        #: runtime -> what its sandbox probe found on this host (kept here for a restarted agent)
        self.sandbox: dict[str, SandboxProbe] = {}
        #: why this host takes no more requests (no agent could be started there), once it is so
        self.broken: str | None = None

    def _run(self, command: str) -> Any:
        try:
            return self.backend.run(command)
        except Exception as exc:  # a transport fault of any kind: name the host, keep going
            raise HostError(f"host {self.spec}: cannot run commands there: {type(exc).__name__}: {exc}") from None

    def _request(self, op: str, request: dict[str, Any], timeout: float) -> Any:
        # The harness's reference runtime, by path: a guest sharing this machine's root finds it there.
        return self.agent.request({"op": op, **request, "flags": self.runtime_flags, "tag": self.tag,
                                   "ref": ref_launcher(), "rootless_user": os.environ.get(ROOTLESS_USER_ENV)},
                                  timeout)

    def execute(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...],
                upcoming: Next | None = None) -> Execution:  # another host's agent writes no bundle ahead
        if self.broken is not None:
            return Execution(error=self.broken)
        known = self.sandbox.get(runtime)
        request = {"scenario": scenario.to_json(), "runtime": runtime, "disabled": list(disabled),
                   "sandbox": None if known is None else asdict(known)}
        timeout = scenario.timeout + self.grace_s
        note = None
        try:
            try:
                answer = self._request("execute", request, timeout)
            except AgentDied as died:  # restarted once, the scenario sent again; the cell says so
                note = f"{died}; a new agent was started and ran the scenario again"
                answer = self._request("execute", request, timeout)
        except AgentStartFailed as exc:
            return Execution(error=self._give_up(exc, note), host_note=note)
        except AgentHung as exc:
            hung = f"{exc} (the scenario's timeout {scenario.timeout:.0f}s + {self.grace_s:.0f}s)"
            return Execution(error=self._restart_after_hang(hung), host_note=note)
        except (AgentError, HostError) as exc:
            return Execution(error=str(exc) if note is None else f"{exc} (after: {note})", host_note=note)
        done = Execution.from_json(answer, scenario)
        done.host_note = note
        if done.sandbox is not None:
            self.sandbox[runtime] = done.sandbox
        return done

    def _restart_after_hang(self, hung: str) -> str:
        """A new agent at once: when none starts the host is broken, and the hung cell says so too."""
        if not isinstance(self.agent, AgentLink):
            return f"{hung}; the next scenario starts a new agent"
        try:
            self.agent.start()
        except AgentStartFailed as exc:
            return self._give_up(exc, hung)
        return f"{hung}; a new agent was started for the next scenarios"

    def _give_up(self, failed: AgentStartFailed, before: str | None = None) -> str:
        """Mark the host broken: from now on each of its cells is this one line, without being run."""
        self.broken = (f"{failed}; the host is marked broken: its remaining cells were not run"
                       + (f" (after: {before})" if before else ""))
        return self.broken

    def describe(self, runtimes: list[str]) -> HostDescription:
        if self.broken is not None:
            raise HostError(self.broken)
        try:
            return cast(HostDescription, self._request("describe", {"runtimes": runtimes}, DESCRIBE_TIMEOUT_S))
        except AgentError as exc:
            raise HostError(str(exc)) from None

    def bare_runs(self, scenarios: list[Scenario], runtime: str) -> list[float | None]:
        """One bare ``RUNTIME run`` per scenario's bundle, timed on the host (host/bare.py): for bench/."""
        timeout = sum(sc.timeout for sc in scenarios) + self.grace_s
        answer = self._request("bare", {"scenarios": [sc.to_json() for sc in scenarios], "runtime": runtime}, timeout)
        return cast("list[float | None]", answer)

    def close(self) -> None:
        self.agent.close()


class BrokenTarget:
    """A host that could not be set up: every scenario on it is an error with the reason."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec, self.reason = spec, reason

    def execute(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...],
                upcoming: Next | None = None) -> Execution:  # another host's agent writes no bundle ahead
        return Execution(error=self.reason)

    def describe(self, runtimes: list[str]) -> HostDescription:
        return {"profile": {"error": self.reason}, "runtimes": {}}

    def close(self) -> None:
        pass
