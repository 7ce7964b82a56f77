"""Drive a runc-compatible CLI: run, create/start/state/kill/delete — and always clean up.

Every runtime gets a private ``--root`` made for this test session, so the
harness can list and remove everything it started (and nothing else) when a
check fails, a timeout fires, or the user presses Ctrl-C.

To learn the exit status of a container started with create/start, the test
process makes itself a *child subreaper*: when ``RUNTIME create`` exits, the
container's init is re-parented to us and ``waitpid`` tells how it ended,
exactly as a container engine's shim does.
"""
from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from conformance.model.errors import DriverError

from .runtimes import RuntimeProfile

PR_SET_CHILD_SUBREAPER = 36
RUNTIME_CALL_TIMEOUT_S = 30.0


def become_subreaper() -> bool:
    """Adopt orphaned descendants (the containers' inits); False if the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


@dataclass
class RunOutcome:
    """What a foreground run produced."""

    exit: int | None
    timed_out: bool
    duration_s: float


class RuntimeDriver:
    """One runtime, one private state root, and the list of containers it still owns."""

    def __init__(self, profile: RuntimeProfile, root: Path) -> None:
        self.profile = profile
        self.root = root
        self.live: set[str] = set()

    # -- plumbing ---------------------------------------------------------
    def _call(self, *verb: str, timeout: float = RUNTIME_CALL_TIMEOUT_S, check: bool = True,
              ) -> subprocess.CompletedProcess[str]:
        argv = self.profile.argv(self.root, *verb)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
        except subprocess.TimeoutExpired:
            raise DriverError(f"{self.profile.name} {' '.join(verb)}: no answer in {timeout:.0f}s") from None
        if check and done.returncode != 0:
            raise DriverError(f"{self.profile.name} {' '.join(verb)} failed (exit {done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-500:]}")
        return done

    @staticmethod
    def _wait(proc: subprocess.Popen, timeout: float) -> bool:
        """Wait for a runtime process; on timeout kill its whole process group. True if it timed out."""
        if block_until_exit(proc.pid, timeout) is not False:  # exited (or no pidfd: wait polls)
            try:
                proc.wait(timeout=timeout)
                return False
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return True

    # -- helpers we adopted (runsc's sandbox and gofer) ---------------------
    def _call_reaping(self, *verb: str, timeout: float = RUNTIME_CALL_TIMEOUT_S, check: bool = False,
                      ) -> subprocess.CompletedProcess[str]:
        """Run a verb (``delete``) while reaping the zombies of helpers we adopted as subreaper.

        ``runsc create`` leaves two processes that are re-parented to us: the
        sandbox (the state pid, reaped by ``wait_exit``) and the gofer.
        ``runsc delete`` kills the gofer and polls until it is gone — which a
        zombie never is until its parent reaps it; after a second it gives up
        ("context deadline exceeded") and leaves the container's cgroups behind.
        So zombies are reaped while the verb runs; the verb's own process is
        left to Popen.  Only for ``delete``: by then the init's status was taken.
        """
        argv = self.profile.argv(self.root, *verb)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            reap_adopted(exclude=proc.pid)
            try:
                out, err = proc.communicate(timeout=0.005)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    self._wait(proc, 0)
                    proc.communicate()
                    raise DriverError(f"{self.profile.name} {' '.join(verb)}: no answer in {timeout:.0f}s") from None
        reap_adopted()
        if check and proc.returncode != 0:
            raise DriverError(f"{self.profile.name} {' '.join(verb)} failed (exit {proc.returncode}): "
                              f"{(err or out).strip()[-500:]}")
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def kill_strays(self, cid: str | None = None) -> list[int]:
        """SIGKILL processes that still name our private state root (and ``cid``, if given), then reap them.

        A runtime whose ``create`` was cut short (a timeout) may leave its own
        daemons — runsc's sandbox and gofer run in sessions of their own, out
        of reach of the killed process group — without a state entry that
        ``delete`` could find.  Our root is unique to this process, so a
        process naming it is ours.
        """
        marks = {str(self.root), f"--root={self.root}"}
        killed = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                args = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if marks.intersection(args) and (cid is None or any(cid in arg for arg in args)):
                try:
                    os.kill(int(entry), signal.SIGKILL)
                    killed.append(int(entry))
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 2.0
        while killed and time.monotonic() < deadline and any(Path(f"/proc/{p}/cmdline").exists() and
                                                               _state(p) not in ("Z", None) for p in killed):
            time.sleep(0.01)
        reap_adopted()
        return killed

    # -- verbs ------------------------------------------------------------
    def run(self, bundle: Path, cid: str, stdout: IO[bytes], stderr: IO[bytes],
            timeout: float) -> RunOutcome:
        """``RUNTIME run``: foreground, the runtime's exit status is the container's."""
        started = time.monotonic()
        self.live.add(cid)
        ended = False
        try:
            proc = subprocess.Popen(self.profile.argv(self.root, "run", "--bundle", str(bundle), cid),
                                    stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                    start_new_session=True)
            timed_out = self._wait(proc, timeout)
            ended = not timed_out
            return RunOutcome(None if timed_out else _status(proc.returncode), timed_out,
                              time.monotonic() - started)
        finally:
            if ended and not self.has_state(cid):
                self.live.discard(cid)  # run deleted it itself: a delete would only cost a process
            else:
                self.delete(cid)

    def has_state(self, cid: str) -> bool:
        """Whether anything under our private root still names the container (runc, crun, ref: a
        directory ``<id>``; runsc: ``<sandbox>_sandbox:<id>.state``)."""
        try:
            return any(cid in entry for entry in os.listdir(self.root))
        except FileNotFoundError:
            return False

    def create(self, bundle: Path, cid: str, stdin: int, stdout: IO[bytes], stderr: IO[bytes],
               timeout: float) -> int:
        """``RUNTIME create``; returns the init's host pid. The container stays until delete."""
        self.live.add(cid)
        pid_file = bundle / "init.pid"  # saves a `state` process; runc's CLI has it, so do its kin
        proc = subprocess.Popen(self.profile.argv(self.root, "create", "--bundle", str(bundle),
                                                  "--pid-file", str(pid_file), cid),
                                stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True)
        if self._wait(proc, timeout):
            self.kill_strays()
            raise DriverError(f"{self.profile.name} create did not return within {timeout:.0f}s")
        if proc.returncode != 0:
            stderr.flush()
            raise DriverError(f"{self.profile.name} create failed (exit {proc.returncode}): "
                              f"{_tail(stderr)}")
        try:
            return int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return int(self.state(cid)["pid"])

    def start(self, cid: str) -> None:
        self._call("start", cid)

    def state(self, cid: str) -> dict:
        out = self._call("state", cid).stdout
        try:
            return json.loads(out)
        except ValueError:
            raise DriverError(f"{self.profile.name} state {cid}: not JSON: {out[:200]!r}") from None

    def kill(self, cid: str, sig: str = "KILL") -> None:
        self._call("kill", cid, sig, check=False)

    def delete(self, cid: str) -> None:
        """Force-delete; quiet when already gone. Leftovers are caught by ``cleanup``."""
        try:
            if self._call_reaping("delete", "--force", cid).returncode != 0:
                self.kill_strays(cid)  # e.g. runsc lost the state of a sandbox that still runs
        except DriverError:
            self.kill_strays(cid)
        self.live.discard(cid)

    def list_ids(self) -> list[str]:
        if not self.root.exists():
            return []
        done = self._call("list", "-q", check=False)
        return [line.strip() for line in done.stdout.splitlines() if line.strip()]

    def cleanup(self) -> list[str]:
        """Delete every container under our root, then the root itself. Returns what was left."""
        leftovers = sorted(self.live | set(self.list_ids()))
        for cid in leftovers:
            self.kill(cid)
            self.delete(cid)
        leftovers += [f"process {pid}" for pid in self.kill_strays()]
        shutil.rmtree(self.root, ignore_errors=True)
        return leftovers


def _status(returncode: int) -> int:
    """A runtime killed by a signal reports -N through subprocess; the shell convention is 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def _tail(stream: IO[bytes], limit: int = 600) -> str:
    """A runtime's error output, shortened from the middle: the first lines often say
    why (gVisor's "cannot create threads"), the last ones where it gave up."""
    try:
        text = Path(stream.name).read_text(errors="replace").strip()
    except (OSError, AttributeError, TypeError):
        return ""
    return text if len(text) <= limit else f"{text[:limit // 3]} … {text[-(2 * limit) // 3:]}"


def wait_exit(pid: int, timeout: float) -> tuple[int | None, bool]:
    """Wait for a container init we adopted; (exit status as 128+N for signals, timed_out).

    If the init is not our child (the runtime kept it elsewhere), poll until it
    is gone and report the status as unknown (None).
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    block_until_exit(pid, timeout)
    while True:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return _poll_gone(pid, deadline)
        if done:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status), False
        if time.monotonic() > deadline:
            return None, True
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _poll_gone(pid: int, deadline: float) -> tuple[int | None, bool]:
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return None, True
        time.sleep(0.01)
    return None, False


def block_until_exit(pid: int, timeout: float) -> bool | None:
    """Sleep until ``pid`` has exited (True) or ``timeout`` passed (False), on a pidfd.

    Popen.wait(timeout) and a waitpid loop both poll, with sleeps growing to
    20-50 ms: on a 100 ms container that was a quarter of the harness's own
    time.  A pidfd becomes readable the moment the process exits.  None when
    the kernel or Python has no pidfd_open (callers then poll as before).
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        return None
    try:
        return bool(select.select([fd], [], [], max(timeout, 0))[0])
    finally:
        os.close(fd)


def _children() -> list[int]:
    """Our child pids, zombies included (/proc/<pid>/task/<tid>/children)."""
    me = os.getpid()
    pids: list[int] = []
    for task in os.listdir(f"/proc/{me}/task"):
        try:
            pids += [int(p) for p in Path(f"/proc/{me}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return pids


def _state(pid: int) -> str | None:
    """The one-letter state of a process (Z for a zombie), None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def reap_adopted(exclude: int = -1) -> list[int]:
    """Reap every zombie child but ``exclude``: orphans we adopted as subreaper.

    Only zombies are touched, and only while no Popen of ours is waiting for
    its own child (the driver calls this between runtime calls), so nobody's
    exit status is stolen.
    """
    reaped = []
    for pid in _children():
        if pid != exclude and _state(pid) == "Z":
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    reaped.append(pid)
            except ChildProcessError:
                pass
    return reaped
