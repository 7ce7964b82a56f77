"""A private containerd for one test session: started by the harness, stopped and removed by it.

Never the system's service or socket: the daemon gets a config of its own
(``config.toml``) naming its own root (content, snapshots), state dir,
gRPC and ttrpc sockets, all under one directory of the session's state root
(``/run/oci-conformance-TAG-PID/containerd``); each containerd column
has a namespace of its own in it.  Plugins the harness never calls (CRI, the
snapshotters other than overlayfs and native, tracing) are disabled: fewer
to load, nothing that reaches for CNI or a registry.

Two things are not under that directory, by containerd 1.6's design: each
shim's ttrpc socket is ``/run/containerd/s/<sha256>`` (the hash of our
address, namespace and container id, so never a name the system daemon
uses), and the shim re-parents the containers to itself.  ``stop`` removes
what it knows of both; ``sweep`` does the same for a session that was
killed (SIGKILL) before it could, found by the dead pid in its state root's
name.  A daemon whose session ended leaves no process, mount, socket or
directory behind.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from conformance.model.errors import DriverError

from .. import proctable
from ..image import unmount_tree
from . import api
from .wire import RpcError

#: how long a daemon gets to answer its first call (a qemu guest under emulation needs seconds)
START_TIMEOUT_S = 60.0
#: how long it gets to exit on SIGTERM before SIGKILL
STOP_TIMEOUT_S = 10.0
#: where containerd 1.6's shims put their sockets, whatever the daemon's config says
SHIM_SOCKETS = Path("/run/containerd/s")
#: the plugins a private daemon does not load (the harness drives tasks, containers, snapshots, images)
DISABLED_PLUGINS = ("io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp",
                    "io.containerd.internal.v1.tracing")


def binary() -> str | None:
    """containerd's executable on this host, or None."""
    return shutil.which("containerd")


def _config(base: Path) -> str:
    disabled = ", ".join(f'"{p}"' for p in DISABLED_PLUGINS)
    return (f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\ndisabled_plugins = [{disabled}]\n'
            f'[grpc]\n  address = "{base}/grpc.sock"\n[ttrpc]\n  address = "{base}/ttrpc.sock"\n'
            f'[debug]\n  address = ""\n[metrics]\n  address = ""\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{base}/opt"\n')


class Daemon:
    """One running private containerd: its directory, socket, process and version."""

    def __init__(self, base: Path, proc: subprocess.Popen[bytes], version: str) -> None:
        self.base, self.proc, self.version = base, proc, version

    @property
    def address(self) -> str:
        return str(self.base / "grpc.sock")

    @classmethod
    def start(cls, base: Path, timeout: float = START_TIMEOUT_S) -> Daemon:
        """Start containerd with a config of its own under ``base`` and wait until it answers.

        Raises DriverError (one line: which binary, what it said) when it is
        missing or does not answer in time; nothing of it is left then.
        """
        path = binary()
        if path is None:
            raise DriverError("containerd is not installed on this host (Debian: apt-get install containerd; "
                              "ci/setup.sh installs it)")
        base.mkdir(parents=True, exist_ok=True)
        made_run = not SHIM_SOCKETS.parent.exists()  # then the shims make /run/containerd: ours to remove
        (base / "made-run-containerd").write_text("1" if made_run else "0")
        (base / "config.toml").write_text(_config(base))
        log = open(base / "containerd.log", "wb")
        try:
            proc = subprocess.Popen([path, "--config", str(base / "config.toml"), "--log-level", "warn"],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        (base / "daemon.pid").write_text(str(proc.pid))
        try:
            version = _wait_ready(str(base / "grpc.sock"), proc, timeout)
        except BaseException as exc:
            daemon = cls(base, proc, "")
            daemon.stop()
            if isinstance(exc, DriverError):
                said = _tail(base / "containerd.log")
                raise DriverError(f"{exc}{': ' + said if said else ''}") from None
            raise
        return cls(base, proc, version)

    def health(self) -> str:
        """Why a call may have found no daemon, as evidence: '' while it runs with its socket in place;
        otherwise that it exited (its status, its log's last words) or that its socket is gone."""
        status = self.proc.poll()
        if status is not None:
            said = _tail(self.base / "containerd.log", 200)
            return f" (the private containerd, pid {self.proc.pid}, exited with status {status}{': ' + said if said else ''})"
        if not Path(self.address).exists():
            gone = "its directory" if not self.base.exists() else "its socket"
            return (f" (the private containerd, pid {self.proc.pid}, still runs but {gone} {self.address} is gone: "
                    "something else removed it)")
        return ""

    def stop(self) -> list[str]:
        """Stop the daemon and every shim of it, unmount and remove its directory; returns what had to be
        killed or unmounted (empty after an orderly end: the driver deleted its containers first)."""
        left: list[str] = []
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                left.append(f"containerd {self.proc.pid} (killed: no exit on SIGTERM)")
        left += _remove(self.base)
        return left


def _wait_ready(address: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The daemon's version, once it answers on ``address``; DriverError if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        if proc.poll() is not None:
            raise DriverError(f"containerd exited with status {proc.returncode} before it answered on {address}")
        try:
            return api.version(address, timeout=max(0.1, deadline - time.monotonic()))
        except (OSError, RpcError):
            pass
        if time.monotonic() > deadline:
            raise DriverError(f"containerd did not answer on {address} within {timeout:.0f}s")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _tail(log: Path, limit: int = 300) -> str:
    try:
        text = " ".join(log.read_text(errors="replace").split())
    except OSError:
        return ""
    return text[-limit:]


# -- what a daemon leaves: its shims, their sockets, mounts, the directory ------------------------
def _shim_sockets(base: Path) -> list[Path]:
    """The sockets our shims named in their bundles' ``address`` files (``unix:///run/containerd/s/…``)."""
    found = []
    for address in (base / "state").glob("io.containerd.runtime.v2.task/*/*/address"):
        try:
            text = address.read_text().strip()
        except OSError:
            continue
        path = Path(text.removeprefix("unix://"))
        if path.parent == SHIM_SOCKETS:
            found.append(path)
    return found


def _remove(base: Path) -> list[str]:
    """Kill what still names ``base``, remove its shims' sockets, unmount under it, remove it."""
    left = [f"process {pid}" for pid in proctable.kill_all(proctable.naming(str(base)))]
    for sock in _shim_sockets(base):
        if sock.exists():
            sock.unlink(missing_ok=True)
            left.append(f"shim socket {sock}")
    left += [f"mount {p}" for p in unmount_tree(base)]
    made_run = (base / "made-run-containerd").read_text() == "1" if (base / "made-run-containerd").exists() else False
    shutil.rmtree(base, ignore_errors=True)
    if made_run:  # only if empty: a daemon that started since keeps its socket there
        for d in (SHIM_SOCKETS, SHIM_SOCKETS.parent):
            try:
                d.rmdir()
            except OSError:
                break
    return left


def _shim_socket(args: list[str]) -> Path | None:
    """The socket a containerd 1.6 shim serves, from its command line (``-namespace NS -id ID
    -address ADDR``): ``/run/containerd/s/`` + sha256 of ``ADDR/NS/ID``, as the shim names it."""
    flags = dict(zip(args[1::2], args[2::2])) if args and "containerd-shim" in args[0] else {}
    if not all(k in flags for k in ("-namespace", "-id", "-address")):
        return None
    digest = hashlib.sha256(os.path.join(flags["-address"], flags["-namespace"], flags["-id"]).encode()).hexdigest()
    return SHIM_SOCKETS / digest


def sweep(base: Path) -> list[str]:
    """What a killed session's daemon left under ``base`` (its process, shims, mounts): removed.

    Also when ``base`` itself is gone while the daemon runs on (something
    removed the session's directory): the daemon names it in ``--config``,
    its shims in ``-address``, and each shim's socket is computed from its
    command line, since no bundle's ``address`` file is left to read it from.
    """
    sockets = [sock for _, args in proctable.cmdlines() if str(base) in " ".join(args)
               and (sock := _shim_socket(args)) is not None]
    if base.exists():
        left = _remove(base)
    else:
        left = [f"process {pid}" for pid in proctable.kill_all(proctable.naming(str(base)))]
    for sock in sockets:
        if sock.exists():
            sock.unlink(missing_ok=True)
            left.append(f"shim socket {sock}")
    if not left and not base.exists():
        return []
    return [f"containerd {base}: {what}" for what in left] or [f"containerd {base}"]
