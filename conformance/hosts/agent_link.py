"""One agent per host and session, kept open: started once, one request per scenario.

``start`` sends the agent zip through the channel's own stdin (or, for a
guest that shares the harness's files, only where the zip is) to a
bootstrap (``python3 -S -c``: write it to /tmp, exclusively, then run it as
``agent.pyz serve --cleanup`` in the same interpreter): one command, one
Python start, whatever the host.  Each request is one JSON line, each answer
one JSON line (conformance/host/agent.py).  An answer that does not come in
time means the agent hangs: it is stopped (SIGTERM, which makes it remove
what it made; SIGKILL if that does not end it) and the caller decides what
comes next (targets.py: the scenario is an error, the next one starts a new
agent).  An agent that died is noticed by its channel's end and reported
with its last error output.  Nothing here waits on the host without a bound:
opening a channel and the clean-up commands (kill, rm) get their own time
limits, so a host that stopped answering (a wedged guest, a cut network)
shows as an AgentStartFailed within a minute and the caller can give up on
that host (targets.py: its remaining cells become errors at once).

A backend without a stream of its own (channels.opener gives None) gets a
OneShotAgent: the zip is copied once, then ``python3 agent.pyz OP ARG`` runs
per request — slower (one Python start per scenario), the same answers.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shlex
import threading
import time
from typing import Any, Callable

from conformance.model.errors import ConformanceError

from .channels import Channel

#: how long a fresh agent may take to say hello (a TCG guest starts Python from 9p)
START_TIMEOUT_S = 120.0
#: after end of input or SIGTERM: how long the agent gets to remove its containers and files
STOP_WAIT_S = 60.0
#: after SIGTERM to a hung agent, before SIGKILL
KILL_WAIT_S = 5.0
#: how long opening a channel (a new session on the connection) and sending the zip may take
OPEN_TIMEOUT_S = 30.0
#: how long a clean-up command (kill, rm) may take before the host counts as not answering
QUIET_TIMEOUT_S = 20.0
CHUNK = 96 * 1024  # below the kernel's 128 KiB limit for one command-line argument

#: Run with ``python3 -S``: the host's site directories go on the path (where an optional
#: pytest-testinfra may be) without running their ``.pth`` hooks, whatever they import (in a TCG
#: guest here ~0.1 s of the agent's first start: a .pth importing certifi and importlib.resources).
#: Reads ``LENGTH\n`` and the zip from stdin (or ``@PATH\n``: the zip is already readable on the host,
#: as in a guest sharing the harness's files), writes it to argv[1] (which must not exist yet), runs it.
BOOTSTRAP = (
    "import os,sys,runpy,site\n"
    "sys.path+=[d for d in (*site.getsitepackages(),site.getusersitepackages()) if os.path.isdir(d)]\n"
    "i=sys.stdin.buffer\n"
    "n=i.readline()\n"
    "if n[:1]==b'@':\n"
    " with open(n[1:].strip(),'rb') as f: d=f.read()\n"
    "else: d=i.read(int(n))\n"
    "p=sys.argv[1]\n"
    "with os.fdopen(os.open(p,os.O_WRONLY|os.O_CREAT|os.O_EXCL,0o600),'wb') as f: f.write(d)\n"
    "sys.argv=[p,'serve','--cleanup']\n"
    "runpy.run_path(p,run_name='__main__')\n"
)


class AgentError(ConformanceError):
    """The agent on a host could not be started, or did not answer; names the host."""


class AgentDied(AgentError):
    """The agent's channel ended (it exited, was killed, or the connection broke)."""


class AgentHung(AgentError):
    """No answer within the request's time: the agent was stopped."""


class AgentStartFailed(AgentError):
    """No agent could be started on the host (no channel, no hello): it cannot take requests now."""


def _within(seconds: float, work: Callable[[], Any]) -> Any:
    """``work()``'s result, or TimeoutError when it takes longer than ``seconds``.

    Transport calls (paramiko's open_session, testinfra's run) can wait for
    ever on a host that stopped answering; they run in a daemon thread that
    is abandoned at the bound (closing the connection at the end of the
    session ends it).
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = work()
        except BaseException as exc:  # handed to the caller as it is
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:.0f}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def agent_path(tag: str) -> str:
    """Where the zip goes on a host: named by the run's tag, so leftovers can be told apart."""
    return f"/tmp/oci-conformance-agent-{tag}-{os.getpid()}-{secrets.token_hex(3)}.pyz"


class AgentLink:
    """The kept-open agent on one host (``open_channel``: channels.opener of its backend)."""

    def __init__(self, spec: str, run: Callable[[str], Any], open_channel: Callable[[str], Channel],
                 python: str, tag: str, zipped: bytes) -> None:
        self.spec, self.run, self.open_channel = spec, run, open_channel
        self.python, self.tag, self.zipped = python, tag, zipped
        self.channel: Channel | None = None
        #: where the host can read the zip itself (a guest's share): then only the path is sent, not
        #: the ~0.9 MB through its SSH connection (0.3 s of the guest's CPU under emulation)
        self.zip_on_host: str | None = None
        self.pid: int | None = None
        self.path = ""
        self.starts = 0
        #: a clean-up command got no answer in time: the next ones are not tried (each would wait as long)
        self.unanswered = False

    @property
    def running(self) -> bool:
        return self.channel is not None

    def start(self) -> None:
        """Place and start the agent; AgentStartFailed (with its error output) when it does not say hello."""
        self.path = agent_path(self.tag)
        command = f"{shlex.quote(self.python)} -S -c {shlex.quote(BOOTSTRAP)} {shlex.quote(self.path)}"
        try:
            channel = _within(OPEN_TIMEOUT_S, lambda: self.open_channel(command))
            self.channel = channel
            _within(OPEN_TIMEOUT_S, lambda: channel.send(self._zip_message()))
        except Exception as exc:  # a transport fault of any kind: name the host
            if self.channel is not None:
                with contextlib.suppress(Exception):  # closing may wait on the same stuck connection
                    _within(QUIET_TIMEOUT_S, self.channel.drop)
            self._forget()
            raise AgentStartFailed(f"host {self.spec}: cannot run commands there: {type(exc).__name__}: {exc} "
                                   "(starting the agent)") from None
        self.starts += 1
        line = self.channel.readline(time.monotonic() + START_TIMEOUT_S)
        try:
            self.pid = int(json.loads(line or b"{}")["hello"]["pid"])
        except (ValueError, KeyError, TypeError):
            why = f"no hello within {START_TIMEOUT_S:.0f}s" if line is None else self._ending(line)
            self.stop()
            raise AgentStartFailed(f"host {self.spec}: the agent did not start ({self.python}): {why}") from None
        self.unanswered = False

    def _zip_message(self) -> bytes:
        """What the bootstrap reads first: the zip's length and the zip, or where the host finds it."""
        if self.zip_on_host:
            return b"@" + self.zip_on_host.encode() + b"\n"
        return b"%d\n" % len(self.zipped) + self.zipped

    def request(self, payload: dict[str, Any], timeout: float) -> Any:
        """Send one request, return the agent's answer; AgentDied, AgentHung, or AgentError (it refused)."""
        if self.channel is None:
            self.start()
        assert self.channel is not None
        try:
            self.channel.send(json.dumps(payload).encode() + b"\n")
        except OSError:
            raise AgentDied(self._died(b"")) from None
        line = self.channel.readline(time.monotonic() + timeout)
        if line is None:
            self.stop()
            raise AgentHung(f"host {self.spec}: the agent gave no answer within {timeout:.0f}s; it was stopped")
        if not line.endswith(b"\n"):
            raise AgentDied(self._died(line))
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise AgentError(f"host {self.spec}: the agent could not answer: {message['error']}")
        return message["answer"]

    def _ending(self, line: bytes | None) -> str:
        assert self.channel is not None
        said = " ".join(self.channel.stderr_tail().split())[-600:]
        status = self.channel.finish(1.0)
        return (f"exit {status}" if status is not None else "its channel closed") + \
            (f": {said}" if said else "") + (f" (last output {line[-200:]!r})" if line else "")

    def _died(self, line: bytes) -> str:
        message = f"host {self.spec}: the agent (pid {self.pid}) ended: {self._ending(line)}"
        self._cleanup_after()
        return message

    def stop(self) -> None:
        """End the agent: SIGTERM (it removes what it made), SIGKILL if it does not end in time."""
        if self.channel is None:
            return
        if self.pid is not None:
            self._quietly(f"kill -TERM {self.pid} 2>/dev/null; kill -CONT {self.pid} 2>/dev/null")
        if self.channel.finish(KILL_WAIT_S) is None and self.pid is not None:
            self._quietly(f"kill -KILL {self.pid} 2>/dev/null")
        self._cleanup_after()

    def close(self) -> None:
        """End of the session: end of input makes the agent clean up and exit; waited for, then checked."""
        if self.channel is None:
            return
        status = self.channel.finish(STOP_WAIT_S)
        if status is None and self.pid is not None:
            self._quietly(f"kill -KILL {self.pid} 2>/dev/null")
        if status != 0:
            self._cleanup_after()
        self._forget()

    def _cleanup_after(self) -> None:
        """An agent that did not end by itself may have left its zip: remove it, and let the channel go."""
        if self.channel is not None:
            self.channel.drop()
        if self.path:
            self._quietly(f"rm -f {shlex.quote(self.path)} {shlex.quote(self.path + '.ref')}")
        self._forget()

    def _forget(self) -> None:
        self.channel, self.pid = None, None

    def _quietly(self, command: str) -> None:
        """Run a clean-up command, bounded; a host that does not answer in time is not asked again."""
        if self.unanswered:
            return
        try:
            _within(QUIET_TIMEOUT_S, lambda: self.run(command))
        except TimeoutError:
            self.unanswered = True
        except Exception:  # the host is unreachable: nothing more can be done from here
            pass


class OneShotAgent:
    """The agent started per request (``python3 agent.pyz OP BASE64``), for backends without a stream."""

    def __init__(self, spec: str, run: Callable[[str], Any], python: str, tag: str, zipped: bytes) -> None:
        self.spec, self.run, self.python, self.tag, self.zipped = spec, run, python, tag, zipped
        self.path = ""
        self.starts = 0
        self.running = False

    def _place(self) -> str:
        """Copy the agent zip to the host (base64 in argument-sized chunks), once."""
        if not self.path:
            path = agent_path(self.tag)
            data = base64.b64encode(self.zipped).decode()
            self.run(f"rm -f {path}.b64")
            for i in range(0, len(data), CHUNK):
                done = self.run(f"printf %s {data[i:i + CHUNK]} >> {path}.b64")
                if done.rc != 0:
                    raise AgentError(f"host {self.spec}: cannot write {path}: {done.stderr.strip()}")
            done = self.run(f"base64 -d {path}.b64 > {path} && rm -f {path}.b64")
            if done.rc != 0:
                raise AgentError(f"host {self.spec}: cannot place the agent: {done.stderr.strip()}")
            self.path = path
        return self.path

    def request(self, payload: dict[str, Any], timeout: float) -> Any:
        op = payload["op"]
        encoded = base64.b64encode(json.dumps(payload).encode()).decode()
        done = self.run(f"{shlex.quote(self.python)} {self._place()} {op} {encoded}")
        self.starts += 1
        lines = done.stdout.strip().splitlines()
        if done.rc != 0 or not lines:
            raise AgentError(f"host {self.spec}: agent {op} failed (exit {done.rc}): "
                             f"{(done.stderr or done.stdout).strip()[-400:]}")
        return json.loads(lines[-1])

    def stop(self) -> None:
        pass

    def close(self) -> None:
        if self.path:
            try:
                self.run(f"rm -f {self.path} {self.path}.b64 {self.path}.ref")
            except Exception:  # unreachable: nothing more can be done from here
                pass
            self.path = ""
