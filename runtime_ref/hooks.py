"""Hooks: programs the runtime runs at fixed points of the lifecycle.

Each gets the container's state JSON on stdin.  Where they run and who
runs them (runtime-spec config.md#posix-platform-hooks):

* prestart, createRuntime — the runtime, in its own namespaces, after the
  container's namespaces and mounts exist but before pivot_root;
* createContainer — the init, in the container's namespaces, before pivot_root;
* startContainer — the init, after ``start``, just before exec;
* poststart — the runtime, after the process has started;
* poststop — the runtime, on delete.

A failing hook before the process starts aborts the container; a failing
poststart or poststop hook is only reported (the spec says so).

Switches (negative controls) that break one promise each: ``hook-state``
(only id and status on stdin), ``hook-sigpipe`` (a hook that closes its stdin
unread kills the runtime, as crun 1.8's start and delete), ``hook-order``,
``hook-args``, ``hook-timeout`` and ``hook-namespace`` (container.py rewrites
the hook lists for those).

A hook need not read its stdin: the write of the state then fails with EPIPE
(Python ignores SIGPIPE), subprocess drops that error, and the hook's exit
status alone says whether it failed.

A hook without ``env`` runs with the runtime's own environment: the spec
gives ``env`` "the same semantics as environ" and says nothing of its
absence, and runc and crun both hand such a hook their own (a Go exec.Cmd
with a nil Env); ``env: []`` is an empty environment.
"""
from __future__ import annotations

import os

from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Any, Iterable

    from .hints import Config


def run(config: Config, kind: str, state: dict[str, Any], fatal: bool = True,
        disabled: Iterable[str] = ()) -> None:
    """Run every hook of ``kind`` in order; a failure raises (``fatal``) or is printed."""
    import subprocess

    from . import jsonfast
    if "hook-state" in disabled:
        state = {"id": state.get("id"), "status": state.get("status")}
    data = jsonfast.dumps(state).encode()
    for i, h in enumerate((config.get("hooks") or {}).get(kind) or []):
        args = h.get("args") or [h["path"]]
        env = None if h.get("env") is None else dict(e.partition("=")[::2] for e in h["env"])
        try:
            p = _run_one(args, h, data, env, "hook-sigpipe" in disabled)
            err = None if p.returncode == 0 else "exit status %d: %s" % (
                p.returncode, p.stderr.decode(errors="replace").strip())
        except subprocess.TimeoutExpired:
            err = "timed out after %ss" % h.get("timeout")
        except OSError as e:
            err = e.strerror
        if err:
            msg = "%s hook #%d (%s) failed: %s" % (kind, i, h["path"], err)
            if fatal:
                raise Error(msg)
            os.write(2, ("runtime-ref: warning: %s\n" % msg).encode())


def _run_one(args: list[str], h: dict[str, Any], data: bytes, env: dict[str, str] | None,
             sigpipe_kills: bool) -> subprocess.CompletedProcess[bytes]:
    """One hook, the state on its stdin.

    ``sigpipe_kills`` (switch ``hook-sigpipe``): SIGPIPE at its default
    disposition while the state is written, as crun 1.8.1 has it in start and
    delete, so that a hook that closes its stdin before the state is all in the
    pipe kills the runtime in the middle of the verb.
    """
    import signal
    import subprocess
    before = signal.signal(signal.SIGPIPE, signal.SIG_DFL) if sigpipe_kills else None
    try:
        return subprocess.run(args, executable=h["path"], input=data, env=env,
                              timeout=h.get("timeout"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    finally:
        if before is not None:
            signal.signal(signal.SIGPIPE, before)
