"""The state store: one directory per container under ``--root``.

``<root>/<id>/state.json`` holds what later verbs need (pid, bundle, the
cgroups we made, the switches in force); ``config.json`` is the bundle's
config as it was at create time (``exec`` reuses its process settings);
``exec.fifo`` exists from ``create`` until ``start`` and is what the blocked
init is waiting on, exactly as in runc.  Status is never stored: it is read
from the kernel each time (is the pid alive, is it still the same process,
is the fifo still there, is the cgroup frozen).
"""
from __future__ import annotations

import os

from . import jsonfast
from .errors import Error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .hints import Config, StateData

OCI_VERSION = "1.0.2"


def check_id(cid: str) -> None:
    """Refuse an id that is not one directory name."""
    if not cid or cid in (".", "..") or "/" in cid or "\0" in cid:
        raise Error("invalid container id %r" % cid)


def check_id_chars(cid: str) -> None:
    """A new id (create, run): runc's rule, letters, digits and ``_+-.`` only, and not "." or "..".

    The spec leaves the id's form to the runtime; an id that engines, logs and
    cgroup paths all take as it is keeps one container one name everywhere.
    """
    check_id(cid)
    if not all(ch.isalnum() and ch.isascii() or ch in "_+-." for ch in cid):
        raise Error("invalid container id %r: only letters, digits and _+-. are allowed" % cid)


class Container:
    """A container in the store; ``data`` is the parsed state.json."""

    def __init__(self, root: str, cid: str, data: StateData | None = None) -> None:
        check_id(cid)
        self.id = cid
        self.dir = os.path.join(root, cid)
        self.data: StateData = data or {}

    # -- paths
    @property
    def fifo(self) -> str:
        return os.path.join(self.dir, "exec.fifo")

    @property
    def pid(self) -> int:
        return int(self.data.get("pid") or 0)

    # -- store
    @classmethod
    def load(cls, root: str, cid: str) -> Container:
        c = cls(root, cid)
        try:
            with open(os.path.join(c.dir, "state.json"), "rb") as f:
                c.data = jsonfast.loads(f.read())
        except (FileNotFoundError, NotADirectoryError):
            raise Error('container "%s" does not exist' % cid) from None
        except ValueError:
            raise Error('container "%s" has a corrupt state.json' % cid) from None
        return c

    def save(self) -> None:
        """Write state.json atomically (a reader never sees half of it)."""
        tmp = os.path.join(self.dir, ".state.json.tmp")
        with open(tmp, "w") as f:
            f.write(jsonfast.dumps(self.data))
        os.rename(tmp, os.path.join(self.dir, "state.json"))

    def config(self) -> Config:
        """config.json as ``create`` saw it."""
        with open(os.path.join(self.dir, "config.json"), "rb") as f:
            config: Config = jsonfast.loads(f.read())
        return config

    # -- status, read from the kernel
    def alive(self) -> bool:
        """True while the init process exists and is not a zombie."""
        pid = self.pid
        if not pid:
            return False
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                stat = f.read()
        except (FileNotFoundError, ProcessLookupError):
            return False
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] in (b"Z", b"X"):
            return False
        # field 22 (starttime) guards against a recycled pid
        return int(fields[19]) == int(self.data.get("starttime", fields[19]))

    def status(self) -> str:
        """created (the init waits on exec.fifo), running, paused (its cgroup is frozen) or stopped."""
        if not self.alive():
            return "stopped"
        if os.path.exists(self.fifo):
            return "created"
        from .freeze import frozen
        return "paused" if frozen(self.data.get("cgroups")) else "running"

    def oci_state(self) -> dict[str, Any]:
        """The runtime-spec state object (what ``state`` prints and hooks read)."""
        status = self.status()
        return {
            "ociVersion": OCI_VERSION,
            "id": self.id,
            "status": status,
            "pid": self.pid if status != "stopped" else 0,
            "bundle": self.data.get("bundle", ""),
            "annotations": self.data.get("annotations") or {},
        }


def starttime(pid: int) -> int:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def list_ids(root: str) -> list[str]:
    """The containers under ``root``, sorted."""
    try:
        return sorted(n for n in os.listdir(root)
                      if os.path.isfile(os.path.join(root, n, "state.json")))
    except FileNotFoundError:
        return []
