"""Where the runtimes run: the local machine, or hosts reached through pytest-testinfra.

``--hosts`` keeps testinfra's meaning (``local``, ``ssh://``, ``paramiko://``,
``ansible://GROUP`` with ``--ansible-inventory``) plus ``qemu://cgroup-v2`` and
``qemu://cgroup-v1``, guests the harness boots itself (conformance/hosts/qemu.py).
A remote host gets the agent (this package as one zip) and is driven one
command per scenario over testinfra's backend; a host that cannot be
reached turns its scenarios into errors with one clear line, and the other
hosts still run.
"""
from __future__ import annotations

import base64
import functools
import importlib.util
import io
import json
import os
import secrets
import shlex
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, cast

from conformance.host import agent
from conformance.host.drivers.rootless import USER_ENV as ROOTLESS_USER_ENV
from conformance.host.executor import execute
from conformance.host.runtimes import ref_launcher
from conformance.host.session import RunSession
from conformance.model.errors import ConformanceError
from conformance.model.records import Execution, HostDescription, SandboxProbe
from conformance.model.scenario import Scenario

PACKAGE_DIR = Path(__file__).parent.parent  # the conformance package
CHUNK = 96 * 1024  # below the kernel's 128 KiB limit for one command-line argument


class HostError(ConformanceError):
    """A host could not be reached or prepared; names the host."""


class Target(Protocol):
    spec: str

    def execute(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...]) -> Execution: ...
    def describe(self, runtimes: list[str]) -> HostDescription: ...
    def close(self) -> None: ...


class LocalTarget:
    """This machine: the executor runs in-process."""

    spec = "local"

    def __init__(self, runtime_flags: dict[str, list[str]]) -> None:
        self.runtime_flags = runtime_flags
        self.session = RunSession(runtime_flags)

    def execute(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...]) -> Execution:
        return execute(scenario, runtime, disabled, self.session)

    def describe(self, runtimes: list[str]) -> HostDescription:
        return agent.describe({"runtimes": runtimes, "flags": self.runtime_flags})

    def close(self) -> None:
        self.session.close()


#: What ships to another host: the layers that run there (standard library only) and the
#: reference runtime.  The harness's own layers (judge, hosts, reporting, plugin) stay here.
AGENT_PARTS = ("__init__.py", "model", "host")


@functools.lru_cache(maxsize=1)
def agent_zip() -> bytes:
    """The host-side layers and the reference runtime as one runnable zip.

    ``python3 agent.pyz OP ARG`` runs the agent; ``python3 -IS agent.pyz runtime-ref …``
    runs the reference runtime, so ``ref`` exists on any host the suite reaches.
    """
    buf = io.BytesIO()
    files = [(f"conformance/{p.relative_to(PACKAGE_DIR)}", p) for part in AGENT_PARTS
             for p in ([PACKAGE_DIR / part] if part.endswith(".py") else sorted((PACKAGE_DIR / part).rglob("*.py")))]
    ref = importlib.util.find_spec("runtime_ref")
    if ref is not None and ref.origin:
        ref_dir = Path(ref.origin).parent
        files += [(f"runtime_ref/{p.relative_to(ref_dir)}", p) for p in sorted(ref_dir.rglob("*.py"))]
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, path in files:
            if "__pycache__" not in path.parts:
                zf.write(path, name)
        zf.writestr("__main__.py", "import sys\nfrom conformance.host.agent import main\nsys.exit(main())\n")
    return buf.getvalue()


class RemoteTarget:
    """A host reached through a testinfra backend; the agent does the work there."""

    def __init__(self, spec: str, backend: Any, runtime_flags: dict[str, list[str]], tag: str,
                 python: str = "python3") -> None:
        self.spec, self.backend, self.runtime_flags, self.tag = spec, backend, runtime_flags, tag
        self.python = python
        self.agent: str | None = None
        #: runtime -> what its sandbox probe found on this host (the agent is a new process per call)
        self.sandbox: dict[str, SandboxProbe] = {}

    def _run(self, command: str) -> Any:
        try:
            return self.backend.run(command)
        except Exception as exc:  # a transport fault of any kind: name the host, keep going
            raise HostError(f"host {self.spec}: cannot run commands there: {type(exc).__name__}: {exc}") from None

    def _place_agent(self) -> str:
        """Copy the agent zip to the host (base64 in argument-sized chunks)."""
        if self.agent is None:
            path = f"/tmp/oci-conformance-agent-{self.tag}-{os.getpid()}-{secrets.token_hex(3)}.pyz"
            data = base64.b64encode(agent_zip()).decode()
            self._run(f"rm -f {path}.b64")
            for i in range(0, len(data), CHUNK):
                done = self._run(f"printf %s {data[i:i + CHUNK]} >> {path}.b64")
                if done.rc != 0:
                    raise HostError(f"host {self.spec}: cannot write {path}: {done.stderr.strip()}")
            done = self._run(f"base64 -d {path}.b64 > {path} && rm -f {path}.b64")
            if done.rc != 0:
                raise HostError(f"host {self.spec}: cannot place the agent: {done.stderr.strip()}")
            self.agent = path
        return self.agent

    def _call(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        agent = self._place_agent()
        # The harness's reference runtime, by path: a guest sharing this machine's root finds it there.
        payload = base64.b64encode(json.dumps({**request, "tag": self.tag, "ref": ref_launcher(),
                                               "rootless_user": os.environ.get(ROOTLESS_USER_ENV)}).encode()).decode()
        done = self._run(f"{shlex.quote(self.python)} {agent} {op} {payload}")
        lines = done.stdout.strip().splitlines()
        if done.rc != 0 or not lines:
            raise HostError(f"host {self.spec}: agent {op} failed (exit {done.rc}): "
                            f"{(done.stderr or done.stdout).strip()[-400:]}")
        answer: dict[str, Any] = json.loads(lines[-1])
        return answer

    def execute(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...]) -> Execution:
        known = self.sandbox.get(runtime)
        try:
            answer = self._call("execute", {"scenario": scenario.to_json(), "runtime": runtime,
                                            "disabled": list(disabled), "flags": self.runtime_flags,
                                            "sandbox": None if known is None else asdict(known)})
        except HostError as exc:
            return Execution(error=str(exc))
        done = Execution.from_json(answer, scenario)
        if done.sandbox is not None:
            self.sandbox[runtime] = done.sandbox
        return done

    def describe(self, runtimes: list[str]) -> HostDescription:
        return cast(HostDescription, self._call("describe", {"runtimes": runtimes, "flags": self.runtime_flags}))

    def close(self) -> None:
        if self.agent is not None:
            try:
                self._run(f"rm -f {self.agent} {self.agent}.b64 {self.agent}.ref")
            except HostError:
                pass
            self.agent = None


class BrokenTarget:
    """A host that could not be set up: every scenario on it is an error with the reason."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec, self.reason = spec, reason

    def execute(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...]) -> Execution:
        return Execution(error=self.reason)

    def describe(self, runtimes: list[str]) -> HostDescription:
        return {"profile": {"error": self.reason}, "runtimes": {}}

    def close(self) -> None:
        pass
