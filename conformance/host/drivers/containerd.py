"""The engine lane: ``containerd/NAME`` — the same config.json handed to NAME through a private containerd
and its runc shim, as Docker and Kubernetes run containers.

The harness plays the engine (dockerd, kubelet) and nothing more: the
scenario's config.json becomes the container's spec (``Containers.Create``),
the task is created through ``io.containerd.runc.v2`` with the runtime as its
``BinaryName`` and a private ``Root`` (``Tasks.Create``: the shim runs
``NAME --root ROOT/oci-conformance --log … --log-format json create …``),
and pid, status and exit status are containerd's.  ``exec`` goes through
``ctr task exec``.  Host-side facts are read as on the bare lane: the task's
pid is the container's init.

What the lane changes is written into the column's adaptations (the matrix
prints them): the rootfs of a plain scenario is the bundle's busybox copy,
given to containerd by absolute path (``ctr run --rootfs`` does the same); a
scenario with ``image.layers`` is imported as an OCI image and unpacked by
containerd's overlayfs snapshotter (``engine/images.py``), the task's rootfs
being the snapshot's mounts; the stdio are FIFOs the shim copies into
(the harness copies them into the bundle's files); a runtime started with
more than a path (crun's hybrid-host namespace, global flags) runs through
a wrapper script the shim takes as its binary.

One daemon serves every containerd column of a session (engine/daemon.py):
started by the first such driver, stopped when the last one is cleaned up.
A daemon that cannot start makes every cell of the column an error with
its one line, remembered, so the next scenario does not wait again.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import IO, Any, Mapping, Sequence

from conformance.model.errors import DriverError, RuntimeNotFound
from conformance.model.records import RuntimeEntry
from conformance.model.scenario import Scenario

from ..engine import api, daemon
from ..engine.images import Images, snapshot_of
from ..engine.stdio import TaskIO
from ..engine.wire import NOT_FOUND, Message, RpcError
from ..image import Snapshotter
from ..runtimes import RuntimeProfile
from .base import NO_LAUNCH, Launch, RunOutcome, RuntimeDriver, VerbFailed

#: after a forced kill: how long the task gets to be reported exited before it is deleted anyway
KILL_WAIT_S = 5.0

#: UPDATE_FLAGS' names -> where runtime-spec's LinuxResources keeps them
_RESOURCES = {"memory": ("memory", "limit"), "memory_swap": ("memory", "swap"),
              "memory_reservation": ("memory", "reservation"), "pids": ("pids", "limit"),
              "cpu_quota": ("cpu", "quota"), "cpu_period": ("cpu", "period"), "cpu_shares": ("cpu", "shares"),
              "cpuset_cpus": ("cpu", "cpus"), "cpuset_mems": ("cpu", "mems")}


# -- one daemon per session, shared by that session's containerd columns --------------------------
class _Shared:
    def __init__(self, engine: daemon.Daemon) -> None:
        self.daemon = engine
        self.users: set[int] = set()


_DAEMONS: dict[Path, _Shared] = {}   # the session's state root -> its daemon
_FAILED: dict[Path, str] = {}        # the session's state root -> why its daemon did not start
_LOCK = threading.Lock()


def _acquire(state_root: Path, user: object) -> daemon.Daemon:
    with _LOCK:
        if state_root in _FAILED:
            raise DriverError(_FAILED[state_root])
        shared = _DAEMONS.get(state_root)
        if shared is None:
            try:
                shared = _DAEMONS[state_root] = _Shared(daemon.Daemon.start(state_root / "containerd"))
            except DriverError as exc:
                _FAILED[state_root] = f"the private containerd did not start: {exc}"
                raise DriverError(_FAILED[state_root]) from None
        shared.users.add(id(user))
        return shared.daemon


def _release(state_root: Path, user: object) -> list[str]:
    with _LOCK:
        shared = _DAEMONS.get(state_root)
        if shared is None:
            return []
        shared.users.discard(id(user))
        if shared.users:
            return []
        del _DAEMONS[state_root]
    return shared.daemon.stop()


_VERSION: dict[str, str] = {}

#: the exec helper as a command: this package's root on its path (a directory, or the agent's zip on a remote host)
_EXEC_BOOT = (f"import sys; sys.path.insert(0, {str(Path(__file__).parents[3])!r}); "
              "from conformance.host.engine.exec_process import main; main(sys.argv[1:])")


def containerd_version() -> str:
    """``containerd --version``'s version (1.6.20~ds1), asked once; RuntimeNotFound without containerd."""
    if "v" not in _VERSION:
        path = daemon.binary()
        if path is None:
            raise RuntimeNotFound("containerd is not installed on this host (Debian: apt-get install containerd; "
                                  "ci/setup.sh installs it)")
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout.split()
        _VERSION["v"] = out[2] if len(out) > 2 else "unknown"
    return _VERSION["v"]


# -- the driver ---------------------------------------------------------------------------------------
class ContainerdDriver(RuntimeDriver):
    """One runtime behind the session's private containerd and its runc shim."""

    lane = "containerd"
    spelling = "containerd/{}"
    relays_terminal = True

    def __init__(self, profile: RuntimeProfile, root: Path) -> None:
        super().__init__(profile, root)
        self.live: set[str] = set()
        self._io: dict[str, TaskIO] = {}
        self._state_root = root.parent
        self.engine = _acquire(self._state_root, self)
        try:
            #: this column's own namespace in the session's daemon (its containers, nobody else's)
            self.namespace = root.name
            self.client = api.Client(self.engine.address, self.namespace)
            self.runtime_root = root / "runc"  # the shim appends the namespace: runtime_root/NAMESPACE
            self.binary = self._binary()
            self._images = Images(self.client, self._ctr(), self.engine.base / "state"
                                  / "io.containerd.runtime.v2.task" / self.namespace)
        except BaseException:  # a driver never made is never cleaned up: it must not hold the daemon
            _release(self._state_root, self)
            raise

    # -- identity ----------------------------------------------------------------------
    @classmethod
    def describe(cls, profile: RuntimeProfile) -> RuntimeEntry:
        entry = profile.as_json()
        entry.update({"engine": f"containerd {containerd_version()}", "shim": api.RUNC_SHIM, "lane": cls.lane,
                      "snapshotter": f"containerd {containerd_version()} overlayfs (images imported as OCI layouts)",
                      "adaptations": [*profile.adaptations, *cls.lane_adaptations(profile)]})
        return entry

    @staticmethod
    def lane_adaptations(profile: RuntimeProfile) -> list[str]:
        said = ["containerd: the scenario's config.json is the container's spec; without an image its "
                "root.path is made absolute (the bundle's busybox copy, as `ctr run --rootfs`); with one the "
                "rootfs is containerd's overlayfs snapshot, mounted by the shim",
                "containerd: stdin is the harness's pipe, stdout and stderr FIFOs the shim writes "
                "(the harness copies them into the bundle's files); BUNDLE/init.pid is a link to the shim's bundle's "
                "init.pid (the runtime's --pid-file under the shim); exec is containerd's Tasks.Exec with runc's exec "
                "flags applied to the container's process spec (as `ctr task exec` does for --user and --cwd)",
                "containerd: scenarios with `cli` steps or a `launch` (descriptors, --preserve-fds, a console socket) "
                "are skipped: an engine exposes neither the runtime's command line nor its caller's descriptors "
                "to the runtime",
                "containerd: a container with process.terminal is a task created with a terminal: the shim takes the "
                "runtime's console and relays it (stdin FIFO into the pty, its output into the stdout FIFO); the "
                "harness reads the terminal's \\r\\n as \\n, and releases an entrypoint waiting in `read _` by "
                "typing a line and ^D into the stdin FIFO, echo turned off first through the task's terminal (its "
                "init's fd 0: the shim holds the master), as the bare lane does on the master"]
        if profile.launcher or len(profile.command) > 1 or profile.global_flags:
            said.append(f"containerd: the shim's BinaryName is a wrapper script running "
                        f"`{' '.join([*profile.launcher, *profile.command, *profile.global_flags])}` (the shim runs a binary, "
                        "without extra arguments)")
        return said

    @property
    def images(self) -> Snapshotter | None:
        """containerd's importer and overlayfs snapshotter (engine/images.py)."""
        return self._images

    def _ctr(self) -> list[str]:
        """``ctr`` on this daemon, in this column's namespace."""
        return [shutil.which("ctr") or "ctr", "--address", self.engine.address, "--namespace", self.namespace]

    @property
    def adaptations(self) -> list[str]:
        return [*self.profile.adaptations, *self.lane_adaptations(self.profile)]

    def _binary(self) -> str:
        """What the shim runs: the runtime's path, or a wrapper carrying its launcher and global flags."""
        if not self.profile.launcher and len(self.profile.command) == 1 and not self.profile.global_flags:
            return self.profile.command[0]
        wrapper = self.root / "runtime"
        argv = " ".join(shlex.quote(a) for a in [*self.profile.launcher, *self.profile.command,
                                                  *self.profile.global_flags])
        wrapper.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
        wrapper.chmod(0o755)
        return str(wrapper)

    def sweep_argv(self) -> list[str]:
        """The runtime's argv at the shim's root: how a later run deletes what a killed one left."""
        return self.profile.argv(self.runtime_root / self.namespace)

    @classmethod
    def close_session(cls, state_root: Path) -> list[str]:
        """The session's daemon, if a column's cleanup did not stop it (it failed, or a driver's
        construction failed half-way): stopped now, its shims killed, its directory removed."""
        with _LOCK:
            shared = _DAEMONS.pop(state_root, None)
            _FAILED.pop(state_root, None)
        if shared is None:
            return []
        return [f"containerd {shared.daemon.proc.pid} (still running at the session's end)",
                *shared.daemon.stop()]

    @classmethod
    def sweep_dead(cls, state_root: Path) -> list[str]:
        """A killed session's daemon and shims (its containers go by their runtime's argv: session.py)."""
        return daemon.sweep(state_root / "containerd")

    def _options(self) -> Message:
        return api.runc_options(self.binary, str(self.runtime_root))

    def unsupported(self, scenario: Scenario) -> str | None:
        """An engine hands the runtime no descriptor of its caller's and exposes no runtime command line:
        ``launch`` and ``cli`` steps have no equivalent through containerd (the bare column judges them)."""
        if scenario.launch.fds or scenario.launch.preserve_fds:
            return ("containerd lane: the shim starts the runtime, so no descriptor of the caller's reaches it "
                    "(launch.fds / --preserve-fds have no engine equivalent); the bare column judges this")
        if scenario.launch.console_socket is not None:
            return ("containerd lane: a terminal is the shim's (it takes the runtime's console and relays it), "
                    "and no engine hands a caller's --console-socket to the runtime, or withholds it; "
                    "the bare column judges this")
        cli = [step for step in scenario.steps if isinstance(step, dict) and "cli" in step]
        if cli:
            return ("containerd lane: the `cli` steps run the runtime's own command line "
                    f"({' '.join(map(str, cli[0]['cli'].get('args', [])))} …), which an engine does not expose; "
                    "the bare column judges this")
        return None

    # -- plumbing ----------------------------------------------------------------------
    def _refused(self, verb: str, exc: RpcError) -> VerbFailed:
        return VerbFailed(self.label, verb, 1, exc.message or str(exc))

    def _rpc(self, verb: str, cid: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(cid, *args)
        except RpcError as exc:
            raise self._refused(verb, exc) from None
        except OSError as exc:
            raise DriverError(f"{self.label} {verb} {cid}: containerd did not answer: {exc}{self.engine.health()}") from None

    @staticmethod
    def _check_launch(launch: Launch) -> None:
        if launch.fds or launch.preserve_fds or launch.console is not None:
            raise DriverError("containerd lane: the shim starts the runtime, so no descriptor of the harness's "
                              "can be handed to it (launch.fds / --preserve-fds / --console-socket have no engine equivalent)")

    def _spec(self, bundle: Path) -> tuple[dict[str, Any], list[api.Mount]]:
        """The bundle's config.json as containerd gets it, and the rootfs mounts (an image's snapshot)."""
        spec: dict[str, Any] = json.loads((bundle / "config.json").read_text())
        saved = snapshot_of(bundle)
        if saved is not None:
            spec.setdefault("root", {})["path"] = "rootfs"  # the shim mounts the snapshot at its bundle's rootfs
            return spec, [api.Mount(m["type"], m["source"], m["options"]) for m in saved["mounts"]]
        root = spec.setdefault("root", {"path": "rootfs"})
        if not os.path.isabs(root.get("path", "rootfs")):
            root["path"] = str(bundle / root.get("path", "rootfs"))
        return spec, []

    # -- verbs -------------------------------------------------------------------------
    def run(self, bundle: Path, cid: str, stdout: IO[bytes], stderr: IO[bytes], timeout: float,
            launch: Launch = NO_LAUNCH) -> RunOutcome:
        """create, start, wait and delete, as ``ctr run --rm``: the task's exit status is the run's, and a
        refused create or start is what ``ctr run`` makes of it (its words on stderr, exit 1)."""
        started = time.monotonic()
        try:
            self._create(bundle, cid, None, stdout, stderr, timeout, launch)
            self.start(cid)
            exit_status, timed_out = self.wait(cid, max(0.0, timeout - (time.monotonic() - started)))
            return RunOutcome(exit_status, timed_out, time.monotonic() - started)
        except VerbFailed as exc:
            stderr.write(f"containerd: {exc.output}\n".encode())
            stderr.flush()
            return RunOutcome(1, False, time.monotonic() - started)
        finally:
            self.delete(cid)

    def create(self, bundle: Path, cid: str, stdin: int, stdout: IO[bytes], stderr: IO[bytes],
               timeout: float, launch: Launch = NO_LAUNCH) -> int:
        return self._create(bundle, cid, stdin, stdout, stderr, timeout, launch)

    def _create(self, bundle: Path, cid: str, stdin: int | None, stdout: IO[bytes], stderr: IO[bytes],
                timeout: float, launch: Launch) -> int:
        """The container record, then the task (the shim runs the runtime's create); a refused record
        (an id that exists) leaves everything as it was, a refused task removes the record again."""
        self._check_launch(launch)
        spec, rootfs = self._spec(bundle)
        try:
            self.client.create_container(cid, spec, self._options(), {"oci-conformance": "1"})
        except RpcError as exc:
            raise self._refused("create", exc) from None
        except OSError as exc:
            raise DriverError(f"{self.label} create: containerd did not answer: {exc}{self.engine.health()}") from None
        self.live.add(cid)
        terminal = (spec.get("process") or {}).get("terminal") is True
        self._io[cid] = io = TaskIO(bundle, stdin, stdout, stderr, lambda: _quietly(self.client.close_stdin, cid),
                                    terminal=terminal, echo_off=lambda: _echo_off(self.client.get(cid).pid))
        self._link_pid_file(bundle, cid)
        try:
            return self.client.create_task(cid, io.stdin, io.stdout, io.stderr, self._options(), rootfs, timeout,
                                           terminal)
        except RpcError as exc:
            self.delete(cid)
            raise self._refused("create", exc) from None
        except socket.timeout:
            self.delete(cid)
            raise DriverError(f"{self.label} create did not return within {timeout:.0f}s") from None
        except OSError as exc:
            self.delete(cid)
            raise DriverError(f"{self.label} create: containerd did not answer: {exc}{self.engine.health()}") from None

    def _link_pid_file(self, bundle: Path, cid: str) -> None:
        """BUNDLE/init.pid, where the bare lane's create writes its --pid-file, points at the file the shim's
        create --pid-file makes the runtime write (in the shim's bundle): host facts read the runtime's own."""
        link = bundle / "init.pid"
        if not link.exists() and not link.is_symlink():
            link.symlink_to(self._shim_bundle(cid) / "init.pid")

    def start(self, cid: str) -> None:
        self._rpc("start", cid, self.client.start)

    def state(self, cid: str) -> dict[str, Any]:
        task = self._rpc("state", cid, self.client.get)
        return {"ociVersion": self.spec_version, "id": cid, "status": task.status, "pid": task.pid,
                "bundle": str(self._shim_bundle(cid))}

    def _shim_bundle(self, cid: str) -> Path:
        """The bundle the shim makes for the task and hands the runtime (its config.json, init.pid)."""
        return self.engine.base / "state" / "io.containerd.runtime.v2.task" / self.namespace / cid

    def kill(self, cid: str, sig: str = "KILL") -> None:
        self._rpc("kill", cid, self.client.kill, _signal_number(sig))

    def wait(self, cid: str, timeout: float) -> tuple[int | None, bool]:
        try:
            return self.client.wait(cid, timeout), False
        except socket.timeout:
            return None, True
        except RpcError as exc:
            if exc.code == NOT_FOUND:
                return None, False
            raise self._refused("wait", exc) from None

    def delete(self, cid: str, force: bool = True) -> None:
        """Without ``force``, containerd's own delete (refused for a running task); with it, what an engine's
        forced removal does: kill every process (a paused task thawed after, as Docker does), wait, delete."""
        if not force:
            self._rpc("delete", cid, self.client.delete_task)
            self._forget(cid)
            return
        try:
            self._force_delete(cid)
        finally:
            self._forget(cid)

    def _force_delete(self, cid: str) -> None:
        try:
            status = self.client.get(cid).status
        except (RpcError, OSError):
            status = "absent"
        if status not in ("absent", "stopped"):
            _quietly(self.client.kill, cid, signal.SIGKILL, True)
            if status in ("paused", "pausing"):
                _quietly(self.client.resume, cid)
            try:
                self.client.wait(cid, KILL_WAIT_S)
            except (RpcError, OSError):
                pass
        if status != "absent":
            try:
                self.client.delete_task(cid)
            except RpcError as exc:
                if exc.code != NOT_FOUND:
                    raise self._refused("delete", exc) from None

    def _forget(self, cid: str) -> None:
        """The container record and the stdio copies go with the task."""
        _quietly(self.client.delete_container, cid)
        io = self._io.pop(cid, None)
        if io is not None:
            io.finish()
        self.live.discard(cid)

    def force_delete(self, cid: str) -> tuple[int, str]:
        try:
            self._force_delete(cid)
        except DriverError as exc:
            return 1, str(exc)
        self._forget(cid)
        return 0, ""

    def pause(self, cid: str) -> None:
        self._rpc("pause", cid, self.client.pause)

    def resume(self, cid: str) -> None:
        self._rpc("resume", cid, self.client.resume)

    def update(self, cid: str, resources: Mapping[str, int | str]) -> None:
        spec: dict[str, dict[str, int | str]] = {}
        for name, value in resources.items():
            group, key = _RESOURCES[name]
            spec.setdefault(group, {})[key] = value
        self._rpc("update", cid, self.client.update, spec)

    def ps(self, cid: str) -> list[int]:
        pids: list[int] = self._rpc("ps", cid, self.client.pids)
        return pids

    def call(self, args: Sequence[str], timeout: float) -> tuple[int, str]:
        """The runtime's own command line at the shim's root: the CLI under test is the one the shim calls."""
        try:
            done = subprocess.run(self.sweep_argv() + list(args), capture_output=True, text=True, timeout=timeout,
                                  input="", start_new_session=True)
        except subprocess.TimeoutExpired:
            raise DriverError(f"{self.label} {' '.join(args)}: no answer in {timeout:.0f}s") from None
        return done.returncode, (done.stderr or "") + (done.stdout or "")

    def exec_argv(self, cid: str, flags: Sequence[str] = ()) -> list[str]:
        """containerd's ``Tasks.Exec`` with runc's exec flags applied to the container's process spec
        (engine/exec_process.py: ``ctr task exec`` expresses only ``--user``, ``--cwd``, ``--detach``)."""
        return [sys.executable, "-IS", "-c", _EXEC_BOOT, "--address", self.engine.address, "--namespace",
                self.namespace, "--fifo-dir", str(self.engine.base / "fifo"), *flags, cid]

    def list_ids(self) -> list[str]:
        try:
            return self.client.container_ids()
        except (RpcError, OSError):
            return []

    def cleanup(self) -> list[str]:
        """Delete every container this driver made, then its root; the last containerd column stops the daemon."""
        leftovers = sorted(self.live | set(self.list_ids()))
        for cid in leftovers:
            try:
                self.delete(cid)
            except DriverError:
                pass
        for io in self._io.values():
            io.finish(0)
        self._io.clear()
        leftovers += _release(self._state_root, self)
        shutil.rmtree(self.root, ignore_errors=True)
        return leftovers


def _echo_off(pid: int) -> None:
    """Turn off echo on the terminal of the task whose init is ``pid``, through its slave (its fd 0):
    the shim holds the master, and the harness's typing must not show in the output."""
    with contextlib.suppress(OSError, termios.error):  # the task is gone, and its terminal with it
        fd = os.open(f"/proc/{pid}/fd/0", os.O_RDWR | os.O_NOCTTY)
        try:
            attrs = termios.tcgetattr(fd)
            attrs[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        finally:
            os.close(fd)


def _signal_number(sig: str) -> int:
    if sig.isdigit():
        return int(sig)
    name = sig.upper()
    return int(signal.Signals[name if name.startswith("SIG") else "SIG" + name])


def _quietly(fn: Any, *args: Any) -> None:
    """A call whose refusal changes nothing (killing a task that exited meanwhile)."""
    try:
        fn(*args)
    except (RpcError, OSError):
        pass
