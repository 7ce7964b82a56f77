"""The state store: one directory per container under ``--root``.

``<root>/<id>/state.json`` holds what later verbs need (pid, bundle, the
cgroups we made, the switches in force); ``config.json`` is the bundle's
config as it was at create time (``exec`` reuses its process settings);
``exec.fifo`` exists from ``create`` until ``start`` and is what the blocked
init is waiting on, exactly as in runc.  Status is never stored: it is read
from the kernel each time (is the pid alive, is it still the same process,
is the fifo still there).
"""
import os

from .errors import Error
from . import jsonfast

OCI_VERSION = "1.0.2"


def check_id(cid):
    if not cid or cid in (".", "..") or "/" in cid or "\0" in cid:
        raise Error("invalid container id %r" % cid)


class Container:
    """A container in the store; ``data`` is the parsed state.json."""

    def __init__(self, root, cid, data=None):
        check_id(cid)
        self.id = cid
        self.dir = os.path.join(root, cid)
        self.data = data or {}

    # -- paths
    @property
    def fifo(self):
        return os.path.join(self.dir, "exec.fifo")

    @property
    def pid(self):
        return self.data.get("pid") or 0

    # -- store
    @classmethod
    def load(cls, root, cid):
        c = cls(root, cid)
        try:
            with open(os.path.join(c.dir, "state.json"), "rb") as f:
                c.data = jsonfast.loads(f.read())
        except (FileNotFoundError, NotADirectoryError):
            raise Error('container "%s" does not exist' % cid) from None
        except ValueError:
            raise Error('container "%s" has a corrupt state.json' % cid) from None
        return c

    def save(self):
        tmp = os.path.join(self.dir, ".state.json.tmp")
        with open(tmp, "w") as f:
            f.write(jsonfast.dumps(self.data))
        os.rename(tmp, os.path.join(self.dir, "state.json"))

    def config(self):
        with open(os.path.join(self.dir, "config.json"), "rb") as f:
            return jsonfast.loads(f.read())

    # -- status, read from the kernel
    def alive(self):
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
        return int(fields[19]) == self.data.get("starttime", int(fields[19]))

    def status(self):
        if not self.alive():
            return "stopped"
        return "created" if os.path.exists(self.fifo) else "running"

    def oci_state(self):
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


def starttime(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def list_ids(root):
    try:
        return sorted(n for n in os.listdir(root)
                      if os.path.isfile(os.path.join(root, n, "state.json")))
    except FileNotFoundError:
        return []
