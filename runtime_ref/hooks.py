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
(only id and status on stdin), ``hook-order``, ``hook-args``, ``hook-timeout``
and ``hook-namespace`` (container.py rewrites the hook lists for those).

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
            p = subprocess.run(args, executable=h["path"], input=data, env=env,
                               timeout=h.get("timeout"), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
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
