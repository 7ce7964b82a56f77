"""``exec`` on the engine lane: a process started in a running task through containerd's ``Tasks.Exec``.

What an engine does for ``docker exec`` / ``ctr task exec``: the container's
own process spec (``Containers.Get``) with the command and the caller's
flags applied, handed to containerd, which has the shim run the runtime's
``exec --process``.  ``ctr task exec`` expresses only ``--user``, ``--cwd``
and ``--detach``; the harness's scenarios also give runc's other exec flags
(``--env``, ``--cap``, ``--additional-gids``, ``--no-new-privs``,
``--process``, ``--pid-file``), so this module speaks the API itself and
applies each flag to the process spec as runc's own ``exec`` does
(runc 1.1 ``exec.go``: the flags change the container's process; a
``--process`` file replaces it whole).  ``--pid-file`` gets the pid that
``Tasks.Start`` returns.

It runs as a command (the driver's ``exec_argv``), with its stdio copied to
and from FIFOs the shim opens, and exits with the exec'd process's status
(128+N after signal N, as containerd reports it); a refusal is one line on
stderr and exit 1, as ``ctr`` makes of it.  The exec'd process is removed
from containerd (``DeleteProcess``) before it returns, unless detached.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

from . import wire
from .api import PROCESS_TYPE
from .stdio import TaskIO
from .wire import Message, RpcError, first_bytes, first_int

#: how long the exec'd process may run when the caller gives no bound (the caller's own timeout kills us first)
WAIT_S: float | None = None
#: the sets runc 1.1's ``exec --cap`` adds to (ambient only where the inheritable set is not empty:
#: CVE-2022-29162; never the inheritable set itself)
CAPABILITY_SETS = ("bounding", "effective", "permitted")


def parser() -> argparse.ArgumentParser:
    """runc exec's flags (the subset the harness gives), then the container id and the command."""
    p = argparse.ArgumentParser(prog="exec_process", add_help=False)
    p.add_argument("--address", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--fifo-dir", required=True)
    p.add_argument("--user")
    p.add_argument("--env", action="append", default=[])
    p.add_argument("--cwd")
    p.add_argument("--cap", action="append", default=[])
    p.add_argument("--additional-gids", action="append", default=[])
    p.add_argument("--no-new-privs", action="store_true")
    p.add_argument("--detach", action="store_true")
    p.add_argument("--process")
    p.add_argument("--pid-file")
    p.add_argument("cid")
    p.add_argument("command", nargs=argparse.REMAINDER)
    return p


def process_spec(base: Dict[str, Any], args: argparse.Namespace) -> Dict[str, Any]:
    """The exec'd process: ``--process``'s file as given, else the container's process with the flags applied."""
    if args.process:
        loaded: Dict[str, Any] = json.loads(Path(args.process).read_text())
        return loaded
    process: Dict[str, Any] = json.loads(json.dumps(base))
    process["terminal"] = False
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command:
        process["args"] = command
    if args.cwd:
        process["cwd"] = args.cwd
    process["env"] = [*process.get("env", []), *args.env]
    user = process.setdefault("user", {"uid": 0, "gid": 0})
    if args.user:
        uid, _, gid = args.user.partition(":")
        user["uid"] = int(uid)
        if gid:
            user["gid"] = int(gid)
    if args.additional_gids:
        user["additionalGids"] = [*user.get("additionalGids", []), *(int(g) for g in args.additional_gids)]
    if args.cap:
        caps = process.setdefault("capabilities", {})
        for name in (*CAPABILITY_SETS, *(("ambient",) if caps.get("inheritable") else ())):
            caps[name] = [*caps.get(name, []), *(c for c in args.cap if c not in caps.get(name, []))]
    if args.no_new_privs:
        process["noNewPrivileges"] = True
    return process


class _Calls:
    """The four calls an exec makes, on one daemon's socket in one namespace."""

    def __init__(self, address: str, namespace: str) -> None:
        self.address, self.metadata = address, {"containerd-namespace": namespace}

    def call(self, method: str, request: Message, timeout: float | None = 30.0) -> bytes:
        return wire.call(self.address, f"/containerd.services.{method}", request.done(), self.metadata, timeout)

    def container_process(self, cid: str) -> Dict[str, Any]:
        """The container's spec's process, as containerd holds it (``Containers.Get``)."""
        container = first_bytes(wire.fields(self.call("containers.v1.Containers/Get", Message().data(1, cid))), 1)
        spec_any = first_bytes(wire.fields(container), 5)
        spec: Dict[str, Any] = json.loads(first_bytes(wire.fields(spec_any), 2) or b"{}")
        process: Dict[str, Any] = spec.get("process") or {}
        return process

    def exec(self, cid: str, exec_id: str, process: Dict[str, Any], stdio: Sequence[str]) -> None:
        request = (Message().data(1, cid).data(2, stdio[0]).data(3, stdio[1]).data(4, stdio[2])
                   .data(6, wire.any_message(PROCESS_TYPE, json.dumps(process).encode())).data(7, exec_id))
        self.call("tasks.v1.Tasks/Exec", request)

    def start(self, cid: str, exec_id: str) -> int:
        return first_int(wire.fields(self.call("tasks.v1.Tasks/Start", Message().data(1, cid).data(2, exec_id))), 1)

    def wait(self, cid: str, exec_id: str) -> int:
        answer = self.call("tasks.v1.Tasks/Wait", Message().data(1, cid).data(2, exec_id), WAIT_S)
        return first_int(wire.fields(answer), 1)

    def close_stdin(self, cid: str, exec_id: str) -> None:
        try:
            self.call("tasks.v1.Tasks/CloseIO", Message().data(1, cid).data(2, exec_id).number(3, True))
        except (RpcError, OSError):
            pass

    def delete(self, cid: str, exec_id: str) -> None:
        try:
            self.call("tasks.v1.Tasks/DeleteProcess", Message().data(1, cid).data(2, exec_id))
        except (RpcError, OSError):
            pass


def run(argv: List[str]) -> int:
    """One exec; its exit status (1 with one line on stderr when containerd refused it)."""
    args = parser().parse_args(argv)
    calls = _Calls(args.address, args.namespace)
    exec_id = f"exec-{os.getpid()}"
    fifos = Path(args.fifo_dir) / f"{args.namespace}-{args.cid}-{exec_id}"
    fifos.mkdir(parents=True, exist_ok=True)
    io = None if args.detach else TaskIO(fifos, 0, sys.stdout.buffer, sys.stderr.buffer,
                                         lambda: calls.close_stdin(args.cid, exec_id), start=False)
    started = False
    try:
        process = process_spec(calls.container_process(args.cid), args)
        calls.exec(args.cid, exec_id, process, (io.stdin, io.stdout, io.stderr) if io else ("", "", ""))
        pid = calls.start(args.cid, exec_id)
        started = True
        if args.pid_file:
            Path(args.pid_file).write_text(str(pid))
        if io is None:
            return 0
        io.start()
        status = calls.wait(args.cid, exec_id)
        io.finish()
        io = None
        return status
    except (RpcError, OSError, ValueError) as exc:
        sys.stderr.write(f"containerd exec: {exc}\n")
        return 1
    finally:
        if io is not None:
            io.finish(0)
        if not (started and args.detach):  # a detached process stays containerd's until its task goes
            calls.delete(args.cid, exec_id)
        shutil.rmtree(fifos, ignore_errors=True)


def main(argv: List[str]) -> None:
    sys.stdout.flush()
    code = run(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
