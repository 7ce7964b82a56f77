"""The bare lane: a runc-compatible CLI (ref, runc, crun, runsc, any path), driven directly.

Every runtime gets a private ``--root`` made for this test session, so the
harness can list and remove everything it started (and nothing else) when a
check fails, a timeout fires, or the user presses Ctrl-C.

To learn the exit status of a container started with create/start, the test
process makes itself a *child subreaper* (``procs.py``): when ``RUNTIME
create`` exits, the container's init is re-parented to us and ``waitpid``
tells how it ended, exactly as a container engine's shim does.  runsc leaves
more adopted helpers (its sandbox and gofer) whose zombies ``delete`` needs
reaped: see ``_call_reaping``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Sequence

from conformance.model.errors import DriverError

from .. import proctable
from ..runtimes import RuntimeProfile
from .base import NO_LAUNCH, UPDATE_FLAGS, Launch, RunOutcome, RuntimeDriver, VerbFailed
from .procs import (
    become_subreaper,
    empty_stdin,
    ended_within,
    exit_status,
    reap_adopted,
    run_verb,
    wait_exit,
    wait_for_file,
    with_fds_at_3,
)

RUNTIME_CALL_TIMEOUT_S = 30.0

_subreaper_of: int | None = None  # the pid that made itself a subreaper (not inherited across fork)


def _adopt_orphans() -> None:
    """Become a child subreaper once per process, before the first container is created."""
    global _subreaper_of
    if _subreaper_of != os.getpid() and become_subreaper():
        _subreaper_of = os.getpid()


class CliDriver(RuntimeDriver):
    """One runtime's own CLI, one private ``--root``, and the containers it still owns."""

    lane = "bare"
    spelling = "{}"
    writes_output_itself = True

    def __init__(self, profile: RuntimeProfile, root: Path) -> None:
        super().__init__(profile, root)
        self.live: set[str] = set()
        self._inits: dict[str, int] = {}  # cid -> the init's pid, until its exit status is taken
        _adopt_orphans()

    # -- plumbing ---------------------------------------------------------
    def _argv(self, *verb: str) -> list[str]:
        return self.profile.argv(self.root, *verb)

    def _call(self, *verb: str, timeout: float = RUNTIME_CALL_TIMEOUT_S, check: bool = True,
              ) -> subprocess.CompletedProcess[str]:
        """Run a verb to its end; VerbFailed on a non-zero exit when ``check``."""
        try:
            done = run_verb(self._argv(*verb), timeout)  # stdin an empty pipe, not /dev/null: empty_stdin
        except subprocess.TimeoutExpired:
            raise DriverError(f"{self.label} {' '.join(verb)}: no answer in {timeout:.0f}s") from None
        if check and done.returncode != 0:
            raise VerbFailed(self.label, " ".join(verb), done.returncode, (done.stderr or done.stdout).strip())
        return done

    @staticmethod
    def _wait_runtime(proc: subprocess.Popen[Any], timeout: float) -> bool:
        """Wait for a runtime process; on timeout kill its whole process group. True if it timed out."""
        if ended_within(proc, timeout):
            return False
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return True

    # -- helpers we adopted (runsc's sandbox and gofer) ---------------------
    def _call_reaping(self, *verb: str, timeout: float = RUNTIME_CALL_TIMEOUT_S, check: bool = False,
                      output: IO[bytes] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a verb (``delete``) while reaping the zombies of helpers we adopted as subreaper.

        ``runsc create`` leaves two processes that are re-parented to us: the
        sandbox (the state pid, reaped by ``wait``) and the gofer.
        ``runsc delete`` kills the gofer and polls until it is gone — which a
        zombie never is until its parent reaps it; after a second it gives up
        ("context deadline exceeded") and leaves the container's cgroups behind.
        So zombies are reaped while the verb runs; the verb's own process is
        left to Popen.  Only for ``delete``: by then the init's status was taken.

        ``output``: a file for stdout and stderr together, instead of pipes: a
        verb that starts a container (``create``, ``run -d`` as a ``cli`` step)
        hands it our stdio, and a pipe would stay open as long as it lives.
        """
        try:
            done = run_verb(self._argv(*verb), timeout, output, meanwhile=lambda verb_pid: reap_adopted(exclude=verb_pid))
        except subprocess.TimeoutExpired:
            raise DriverError(f"{self.label} {' '.join(verb)}: no answer in {timeout:.0f}s") from None
        reap_adopted()
        if check and done.returncode != 0:
            raise VerbFailed(self.label, " ".join(verb), done.returncode, (done.stderr or done.stdout).strip())
        return done

    def kill_strays(self, cid: str | None = None) -> list[int]:
        """SIGKILL processes that still name our private state root (and ``cid``, if given), then reap them.

        A runtime whose ``create`` was cut short (a timeout) may leave its own
        daemons — runsc's sandbox and gofer run in sessions of their own, out
        of reach of the killed process group — without a state entry that
        ``delete`` could find.  Our root is unique to this process, so a
        process naming it is ours.
        """
        return kill_naming([self.root], cid)

    def has_state(self, cid: str) -> bool:
        """Whether anything under our private root still names the container (runc, crun, ref: a
        directory ``<id>``; runsc: ``<sandbox>_sandbox:<id>.state``)."""
        try:
            return any(cid in entry for entry in os.listdir(self.root))
        except FileNotFoundError:
            return False

    def _launch(self, argv: list[str], launch: Launch, stdin: int, stdout: IO[bytes], stderr: IO[bytes],
                ) -> subprocess.Popen[bytes]:
        """Start a runtime process in a session of its own, with the descriptors ``launch`` hands it."""
        env: dict[str, str] | None = None
        parked: list[int] = []
        if launch.fds:
            argv, parked, env = with_fds_at_3(argv, launch.fds)
        try:
            return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True,
                                    pass_fds=parked, env=env)
        finally:
            for fd in parked:
                os.close(fd)

    @staticmethod
    def _preserve(launch: Launch) -> list[str]:
        return ["--preserve-fds", str(launch.preserve_fds)] if launch.preserve_fds else []

    @staticmethod
    def _console(launch: Launch) -> list[str]:
        return ["--console-socket", launch.console.path] if launch.console is not None else []

    # -- verbs ------------------------------------------------------------
    def run(self, bundle: Path, cid: str, stdout: IO[bytes], stderr: IO[bytes], timeout: float,
            launch: Launch = NO_LAUNCH) -> RunOutcome:
        """``RUNTIME run``: foreground, the runtime's exit status is the container's."""
        if launch.console is not None:
            raise DriverError("a console socket is for create: a foreground run relays the terminal on its "
                              "own stdio, which the harness never makes a terminal (use create/start)")
        started = time.monotonic()
        self.live.add(cid)
        ended = False
        try:
            stdin = empty_stdin()
            try:
                proc = self._launch(self._argv("run", "--bundle", str(bundle), *self._preserve(launch), cid),
                                    launch, stdin, stdout, stderr)
            finally:
                os.close(stdin)
            timed_out = self._wait_runtime(proc, timeout)
            ended = not timed_out
            return RunOutcome(None if timed_out else exit_status(proc.returncode), timed_out,
                              time.monotonic() - started)
        finally:
            if ended and not self.has_state(cid):
                self.live.discard(cid)  # run deleted it itself: a delete would only cost a process
            else:
                self.delete(cid)

    @property
    def keeps_after_run(self) -> bool:
        return self.profile.run_keeps

    def run_attached(self, bundle: Path, cid: str, stdin: int, stdout: IO[bytes], stderr: IO[bytes],
                     timeout: float, while_running: Callable[[int], None], keep: bool = False,
                     launch: Launch = NO_LAUNCH) -> RunOutcome:
        """``RUNTIME run --pid-file [--keep]``: one runtime process where create, start and delete are three.

        runc, crun, runsc and ref write the pid file once the container was
        started; ``while_running`` gets the pid then (the caller still checks
        that the entrypoint was exec'd before reading anything).  The exit
        status is the runtime's, which ``run`` makes the container's.
        ``keep`` (a runtime whose ``run`` has ``--keep``): the stopped
        container stays for the caller, who deletes it.
        """
        started = time.monotonic()
        keep = keep and self.keeps_after_run
        self.live.add(cid)
        pid_file = bundle / "init.pid"
        ended = False
        try:
            proc = self._launch(self._argv("run", *(["--keep"] if keep else []), "--pid-file", str(pid_file),
                                           "--bundle", str(bundle), *self._preserve(launch), cid),
                                launch, stdin, stdout, stderr)
            pid = _pid_when_written(pid_file, proc, started + timeout)
            if pid is not None:
                while_running(pid)
            timed_out = self._wait_runtime(proc, max(0.0, started + timeout - time.monotonic()))
            ended = not timed_out
            return RunOutcome(None if timed_out else exit_status(proc.returncode), timed_out,
                              time.monotonic() - started)
        finally:
            if ended and keep:
                pass  # stopped, kept for the caller (and in ``live`` until its delete)
            elif ended and not self.has_state(cid):
                self.live.discard(cid)  # run deleted it itself
            else:
                self.delete(cid)

    def create(self, bundle: Path, cid: str, stdin: int, stdout: IO[bytes], stderr: IO[bytes],
               timeout: float, launch: Launch = NO_LAUNCH) -> int:
        """``RUNTIME create``; returns the init's host pid. The container stays until delete."""
        self.live.add(cid)
        pid_file = bundle / "init.pid"  # saves a `state` process; runc's CLI has it, so do its kin
        proc = self._launch(self._argv("create", "--bundle", str(bundle), "--pid-file", str(pid_file),
                                       *self._preserve(launch), *self._console(launch), cid),
                            launch, stdin, stdout, stderr)
        if self._wait_runtime(proc, timeout):
            self.kill_strays()
            raise DriverError(f"{self.label} create did not return within {timeout:.0f}s")
        if proc.returncode != 0:
            stderr.flush()
            said = _tail(stderr)
            raise VerbFailed(self.label, "create", proc.returncode, said, shown=said)
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = int(self.state(cid)["pid"])
        self._inits[cid] = pid
        return pid

    def start(self, cid: str) -> None:
        self._call("start", cid)

    def state(self, cid: str) -> dict[str, Any]:
        out = self._call("state", cid).stdout
        try:
            answer = json.loads(out)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise DriverError(f"{self.label} state {cid}: not a JSON object: {out[:200]!r}") from None
        return answer

    def kill(self, cid: str, sig: str = "KILL") -> None:
        self._call("kill", cid, sig)

    def stop(self, cid: str) -> None:
        """SIGKILL the adopted init directly, where it is the container's process: one runtime process
        fewer than ``kill`` (for runtime-ref a Python start).  Not yet reaped, its pid cannot have
        been reused.  A sandbox (runsc: the state pid is its own) gets the runtime's kill."""
        pid = self._inits.get(cid)
        if pid is None or self.sandboxed:
            super().stop(cid)
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait(self, cid: str, timeout: float) -> tuple[int | None, bool]:
        """The adopted init's exit status (``waitpid``; runsc: its sandbox's, which exits with it)."""
        pid = self._inits.get(cid)
        if pid is None:
            return None, False
        status, timed_out = wait_exit(pid, timeout)
        if not timed_out:
            del self._inits[cid]  # taken: a later wait must not poll a pid that may be reused
        return status, timed_out

    def delete(self, cid: str, force: bool = True) -> None:
        """Force: quiet when already gone; processes a failed delete leaves are killed by name."""
        if not force:
            self._call_reaping("delete", cid, check=True)  # runsc's gofer: see there
            self.live.discard(cid)
            return
        try:
            if self._call_reaping("delete", "--force", cid).returncode != 0:
                self.kill_strays(cid)  # e.g. runsc lost the state of a sandbox that still runs
        except DriverError:
            self.kill_strays(cid)
        self.live.discard(cid)

    def pause(self, cid: str) -> None:
        self._call("pause", cid)

    def resume(self, cid: str) -> None:
        self._call("resume", cid)

    def update(self, cid: str, resources: Mapping[str, int | str]) -> None:
        flags = [arg for name, value in resources.items() for arg in (UPDATE_FLAGS[name], str(value))]
        self._call("update", *flags, cid)

    def ps(self, cid: str) -> list[int]:
        """``ps --format json``: runc and crun list host pids, runsc its sandbox's (ints, or objects)."""
        out = self._call("ps", "--format", "json", cid).stdout
        try:
            listed = json.loads(out) or []
        except ValueError:
            raise DriverError(f"{self.label} ps {cid}: not JSON: {out[:200]!r}") from None
        return [int(p["pid"] if isinstance(p, dict) else p) for p in listed]

    def call(self, args: Sequence[str], timeout: float) -> tuple[int, str]:
        """The runtime's own answer to ``args`` (zombies of helpers reaped meanwhile, as for delete);
        what it printed goes through a file (see ``_call_reaping``)."""
        with tempfile.TemporaryFile() as out:
            done = self._call_reaping(*args, timeout=timeout, output=out)
            out.seek(0)
            return done.returncode, out.read().decode(errors="replace")

    def exec_argv(self, cid: str, flags: Sequence[str] = ()) -> list[str]:
        return self._argv("exec", *flags, cid)

    def list_ids(self) -> list[str]:
        """The runtime's containers under our root; an empty root has none, and asking costs a runtime start
        (at the end of a --controls run, one per switch set: under load more than xdist waits for a worker)."""
        if not self.root.exists() or not any(self.root.iterdir()):
            return []
        done = self._call("list", "-q", check=False)
        return [line.strip() for line in done.stdout.splitlines() if line.strip()]

    def cleanup(self) -> list[str]:
        """Delete every container under our root, then the root itself. Returns what was left."""
        return self.remove_containers() + [f"process {pid}" for pid in self.kill_strays()]

    def remove_containers(self) -> list[str]:
        """``cleanup`` without the look for stray processes, which a session makes once for all its
        drivers (``kill_naming``): with a driver per control, one pass over /proc each would
        outlast the time an xdist worker is given to exit."""
        leftovers = sorted(self.live | set(self.list_ids()))
        for cid in leftovers:
            try:
                self.kill(cid)
            except DriverError:
                pass  # stopped already, or unknown: delete --force settles both
            self.delete(cid)
        self._inits.clear()
        shutil.rmtree(self.root, ignore_errors=True)
        return leftovers


def kill_naming(roots: Sequence[Path], cid: str | None = None) -> list[int]:
    """SIGKILL the processes whose command line names one of ``roots`` (and ``cid``, if given; one
    pass over /proc for all of them), then reap them; returns their pids."""
    marks = {str(root) for root in roots} | {f"--root={root}" for root in roots}
    named = [pid for pid, args in proctable.cmdlines()
             if marks.intersection(args) and (cid is None or any(cid in arg for arg in args))]
    killed = proctable.kill_all(named)
    reap_adopted()
    return killed


def _pid_when_written(pid_file: Path, proc: subprocess.Popen[bytes], deadline: float) -> int | None:
    """The pid in ``pid_file`` once the runtime wrote it; None if the runtime ended first or time ran out."""
    if not wait_for_file(pid_file, lambda: proc.poll() is None, deadline):
        return None
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _tail(stream: IO[bytes], limit: int = 600) -> str:
    """A runtime's error output, shortened from the middle: the first lines often say
    why (gVisor's "cannot create threads"), the last ones where it gave up."""
    try:
        text = Path(stream.name).read_text(errors="replace").strip()
    except (OSError, AttributeError, TypeError):
        return ""
    return text if len(text) <= limit else f"{text[:limit // 3]} … {text[-(2 * limit) // 3:]}"
