"""The containerd calls the harness makes (containerd 1.6's API, ``api/services/*/v1``), one function each.

Messages are built and read by field number (``wire.Message``, ``wire.fields``)
from containerd's ``.proto`` files; OCI types inside them (the runtime spec,
a resources update, a process) travel as ``google.protobuf.Any`` holding
JSON, as containerd's ``typeurl`` registers them.  Every call names the
harness's namespace in the ``containerd-namespace`` metadata.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List

from . import wire
from .wire import Message, first_bytes, first_int, first_str

SPEC_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PROCESS_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process"
RESOURCES_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
RUNC_OPTIONS_TYPE = "containerd.runc.v1.Options"
RUNC_SHIM = "io.containerd.runc.v2"
#: containerd's task status enum (api/types/task/task.proto) as the runtime-spec names states
STATUS = {0: "unknown", 1: "created", 2: "running", 3: "stopped", 4: "paused", 5: "pausing"}
#: a call that should answer at once; create and delete wait on the runtime, Wait on the container
CALL_TIMEOUT_S = 30.0


@dataclass
class Mount:
    """containerd.types.Mount: how a snapshot is mounted (overlay with its lowerdirs, or a bind)."""

    type: str
    source: str
    options: List[str] = field(default_factory=list)

    def encode(self) -> Message:
        return Message().data(1, self.type).data(2, self.source).strings(4, self.options)

    @classmethod
    def decode(cls, data: bytes) -> Mount:
        found = wire.fields(data)
        return cls(first_str(found, 1), first_str(found, 2),
                   [v.decode() for v in found.get(4, []) if isinstance(v, bytes)])


@dataclass
class Process:
    """containerd.v1.types.Process: a task's (or exec's) pid, status and exit."""

    container_id: str
    pid: int
    status: str
    exit_status: int


class Client:
    """Calls on one daemon's socket, in one namespace."""

    def __init__(self, address: str, namespace: str) -> None:
        self.address, self.namespace = address, namespace

    def _call(self, service: str, method: str, request: Message, timeout: float | None = CALL_TIMEOUT_S) -> bytes:
        return wire.call(self.address, f"/containerd.services.{service}/{method}", request.done(),
                         {"containerd-namespace": self.namespace}, timeout)

    # -- containers ----------------------------------------------------------------------
    def create_container(self, cid: str, spec: Dict[str, Any], options: Message, labels: Dict[str, str],
                         snapshotter: str = "", snapshot_key: str = "") -> None:
        runtime = Message().data(1, RUNC_SHIM).data(2, wire.any_message(RUNC_OPTIONS_TYPE, options.done()))
        container = (Message().data(1, cid).entries(2, labels).data(4, runtime)
                     .data(5, wire.any_message(SPEC_TYPE, json.dumps(spec).encode()))
                     .data(6, snapshotter).data(7, snapshot_key))
        self._call("containers.v1.Containers", "Create", Message().data(1, container))

    def delete_container(self, cid: str) -> None:
        self._call("containers.v1.Containers", "Delete", Message().data(1, cid))

    def container_ids(self) -> List[str]:
        answer = wire.fields(self._call("containers.v1.Containers", "List", Message()))
        return [first_str(wire.fields(c), 1) for c in answer.get(1, []) if isinstance(c, bytes)]

    # -- tasks ---------------------------------------------------------------------------
    def create_task(self, cid: str, stdin: str, stdout: str, stderr: str, options: Message,
                    rootfs: List[Mount], timeout: float, terminal: bool = False) -> int:
        """The task's pid.  ``terminal``: the shim gives the runtime a console socket, takes the pty's
        master and relays it (``stdin`` into it, its output to ``stdout``; ``stderr`` unused)."""
        request = (Message().data(1, cid).strings(3, [m.encode().done() for m in rootfs])
                   .data(4, stdin).data(5, stdout).data(6, stderr).number(7, terminal)
                   .data(9, wire.any_message(RUNC_OPTIONS_TYPE, options.done())))
        return first_int(wire.fields(self._call("tasks.v1.Tasks", "Create", request, timeout)), 2)

    def start(self, cid: str, exec_id: str = "") -> int:
        answer = self._call("tasks.v1.Tasks", "Start", Message().data(1, cid).data(2, exec_id))
        return first_int(wire.fields(answer), 1)

    def get(self, cid: str) -> Process:
        answer = wire.fields(self._call("tasks.v1.Tasks", "Get", Message().data(1, cid)))
        process = wire.fields(first_bytes(answer, 1))
        return Process(first_str(process, 1), first_int(process, 3), STATUS.get(first_int(process, 4), "unknown"),
                       first_int(process, 9))

    def kill(self, cid: str, signal: int, all_processes: bool = False) -> None:
        self._call("tasks.v1.Tasks", "Kill", Message().data(1, cid).number(3, signal).number(4, all_processes))

    def wait(self, cid: str, timeout: float | None) -> int:
        """The task's exit status, once it exited (containerd: 128+N after signal N); socket.timeout past it."""
        return first_int(wire.fields(self._call("tasks.v1.Tasks", "Wait", Message().data(1, cid), timeout)), 1)

    def delete_task(self, cid: str, timeout: float = CALL_TIMEOUT_S) -> int:
        """Delete the stopped (or never started) task; its exit status."""
        return first_int(wire.fields(self._call("tasks.v1.Tasks", "Delete", Message().data(1, cid), timeout)), 3)

    def close_stdin(self, cid: str) -> None:
        """CloseIO: the shim holds the stdin FIFO open itself, and lets go of it only when told."""
        self._call("tasks.v1.Tasks", "CloseIO", Message().data(1, cid).number(3, True))

    def pause(self, cid: str) -> None:
        self._call("tasks.v1.Tasks", "Pause", Message().data(1, cid))

    def resume(self, cid: str) -> None:
        self._call("tasks.v1.Tasks", "Resume", Message().data(1, cid))

    def pids(self, cid: str) -> List[int]:
        answer = wire.fields(self._call("tasks.v1.Tasks", "ListPids", Message().data(1, cid)))
        return [first_int(wire.fields(p), 1) for p in answer.get(1, []) if isinstance(p, bytes)]

    def update(self, cid: str, resources: Dict[str, Any]) -> None:
        any_resources = wire.any_message(RESOURCES_TYPE, json.dumps(resources).encode())
        self._call("tasks.v1.Tasks", "Update", Message().data(1, cid).data(2, any_resources))

    # -- snapshots -----------------------------------------------------------------------
    def prepare(self, snapshotter: str, key: str, parent: str, labels: Dict[str, str]) -> List[Mount]:
        request = Message().data(1, snapshotter).data(2, key).data(3, parent).entries(4, labels)
        answer = wire.fields(self._call("snapshots.v1.Snapshots", "Prepare", request))
        return [Mount.decode(m) for m in answer.get(1, []) if isinstance(m, bytes)]

    def remove_snapshot(self, snapshotter: str, key: str) -> None:
        self._call("snapshots.v1.Snapshots", "Remove", Message().data(1, snapshotter).data(2, key))

    # -- images --------------------------------------------------------------------------
    def image_target(self, name: str) -> str:
        """The digest an image name points at (its manifest or index)."""
        image = wire.fields(first_bytes(wire.fields(self._call("images.v1.Images", "Get", Message().data(1, name))), 1))
        return first_str(wire.fields(first_bytes(image, 3)), 2)


def runc_options(binary_name: str, root: str) -> Message:
    """containerd.runc.v1.Options: which runc-compatible binary the shim runs, with which ``--root``."""
    return Message().data(6, binary_name).data(7, root)


def version(address: str, timeout: float = CALL_TIMEOUT_S) -> str:
    """The daemon's version (``1.6.20~ds1``): the first call a new daemon answers."""
    answer = wire.call(address, "/containerd.services.version.v1.Version/Version", b"", {}, timeout)
    return first_str(wire.fields(answer), 1)
