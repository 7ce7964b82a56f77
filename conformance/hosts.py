"""Where the runtimes run: the local machine, or hosts reached through pytest-testinfra.

``--hosts`` keeps testinfra's meaning (``local``, ``ssh://``, ``paramiko://``,
``ansible://GROUP`` with ``--ansible-inventory``) plus ``qemu://cgroup-v2`` and
``qemu://cgroup-v1``, guests the harness boots itself (conformance/qemu.py).
A remote host gets the agent (this package as one zip) and is driven one
command per scenario over testinfra's backend; a host that cannot be
reached turns its scenarios into errors with one clear line, and the other
hosts still run.
"""
from __future__ import annotations

import base64
import functools
import io
import json
import os
import secrets
import shlex
import zipfile
from pathlib import Path
from typing import Any, Protocol

from . import hostinfo
from .errors import ConformanceError
from .executor import Execution, execute
from .runtimes import ref_launcher, resolve
from .errors import RuntimeNotFound
from .scenario import Scenario
from .session import RunSession

PACKAGE_DIR = Path(__file__).parent
CHUNK = 96 * 1024  # below the kernel's 128 KiB limit for one command-line argument


class HostError(ConformanceError):
    """A host could not be reached or prepared; names the host."""


class Target(Protocol):
    spec: str

    def execute(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...]) -> Execution: ...
    def describe(self, runtimes: list[str]) -> dict[str, Any]: ...
    def close(self) -> None: ...


class LocalTarget:
    """This machine: the executor runs in-process."""

    spec = "local"

    def __init__(self, runtime_flags: dict[str, list[str]]) -> None:
        self.runtime_flags = runtime_flags
        self.session = RunSession(runtime_flags)

    def execute(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...]) -> Execution:
        return execute(scenario, runtime, disabled, self.session)

    def describe(self, runtimes: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in runtimes:
            try:
                profile = resolve(name, self.runtime_flags.get(name))
                out[profile.name] = profile.as_json()
            except RuntimeNotFound as exc:
                out[name] = {"path": None, "version": None, "error": str(exc)}
        return {"profile": hostinfo.profile(), "runtimes": out}

    def close(self) -> None:
        self.session.close()


@functools.lru_cache(maxsize=1)
def agent_zip() -> bytes:
    """This package and the reference runtime as one runnable zip.

    ``python3 agent.pyz OP ARG`` runs the agent; ``python3 -IS agent.pyz runtime-ref …``
    runs the reference runtime, so ``ref`` exists on any host the suite reaches.
    """
    import importlib.util

    buf = io.BytesIO()
    packages = [("conformance", PACKAGE_DIR)]
    ref = importlib.util.find_spec("runtime_ref")
    if ref is not None and ref.origin:
        packages.append(("runtime_ref", Path(ref.origin).parent))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, directory in packages:
            for path in sorted(directory.rglob("*")):
                if path.suffix in (".py", ".json") and "__pycache__" not in path.parts:
                    zf.write(path, f"{name}/{path.relative_to(directory)}")
        zf.writestr("__main__.py", "import sys\nfrom conformance.agent import main\nsys.exit(main())\n")
    return buf.getvalue()


class RemoteTarget:
    """A host reached through a testinfra backend; the agent does the work there."""

    def __init__(self, spec: str, backend: Any, runtime_flags: dict[str, list[str]], tag: str,
                 python: str = "python3") -> None:
        self.spec, self.backend, self.runtime_flags, self.tag = spec, backend, runtime_flags, tag
        self.python = python
        self.agent: str | None = None

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
        payload = base64.b64encode(json.dumps({**request, "tag": self.tag, "ref": ref_launcher()}).encode()).decode()
        done = self._run(f"{shlex.quote(self.python)} {agent} {op} {payload}")
        lines = done.stdout.strip().splitlines()
        if done.rc != 0 or not lines:
            raise HostError(f"host {self.spec}: agent {op} failed (exit {done.rc}): "
                            f"{(done.stderr or done.stdout).strip()[-400:]}")
        return json.loads(lines[-1])

    def execute(self, scenario: Scenario, runtime: str, disabled: tuple[str, ...]) -> Execution:
        try:
            answer = self._call("execute", {"scenario": scenario.to_json(), "runtime": runtime,
                                            "disabled": list(disabled), "flags": self.runtime_flags})
        except HostError as exc:
            return Execution(error=str(exc))
        return Execution.from_json(answer, scenario)

    def describe(self, runtimes: list[str]) -> dict[str, Any]:
        return self._call("describe", {"runtimes": runtimes, "flags": self.runtime_flags})

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

    def describe(self, runtimes: list[str]) -> dict[str, Any]:
        return {"profile": {"error": self.reason}, "runtimes": {}}

    def close(self) -> None:
        pass


def expand(specs: list[str], ansible_inventory: str | None) -> list[str]:
    """Host specs as given, with ``ansible://GROUP`` expanded to one spec per inventory host."""
    out: list[str] = []
    for spec in specs:
        if spec.startswith("ansible://") and ansible_inventory:
            import testinfra

            try:
                hosts = testinfra.get_hosts([spec], ansible_inventory=ansible_inventory)
            except Exception as exc:
                raise HostError(f"host {spec}: cannot read the inventory {ansible_inventory}: {exc}") from None
            out += [f"ansible://{getattr(h.backend.host, 'name', h.backend.host)}" for h in hosts]
        else:
            out.append(spec)
    return out


class Targets:
    """One target per host spec, made on first use and closed at the end of the session."""

    def __init__(self, runtime_flags: dict[str, list[str]], testinfra_options: dict[str, Any], tag: str) -> None:
        self.runtime_flags, self.options, self.tag = runtime_flags, testinfra_options, tag
        self._targets: dict[str, Any] = {}

    def get(self, spec: str) -> Any:
        if spec not in self._targets:
            try:
                self._targets[spec] = self._make(spec)
            except (HostError, ConformanceError) as exc:
                self._targets[spec] = BrokenTarget(spec, str(exc))
        return self._targets[spec]

    def _make(self, spec: str) -> Any:
        if spec == "local":
            return LocalTarget(self.runtime_flags)
        if spec.startswith("qemu://"):
            from .qemu import QemuTarget  # lazy: only a guest run needs it

            return QemuTarget(spec, self.runtime_flags, self.tag)
        import testinfra

        options = {k: v for k, v in self.options.items() if v}
        try:
            host = testinfra.get_host(spec, **options)
        except Exception as exc:
            raise HostError(f"host {spec}: {type(exc).__name__}: {exc}") from None
        return RemoteTarget(spec, host.backend, self.runtime_flags, self.tag)

    def close(self) -> None:
        for target in self._targets.values():
            target.close()
        self._targets.clear()
