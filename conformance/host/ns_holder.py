"""A process of the suite's own that holds PID, IPC, UTS, network and mount namespaces (host setup ``ns_holder``).

It plays the first of two containers that share namespaces: a scenario's
container joins one of them by path (``/proc/{{ns_holder}}/ns/TYPE``) and must
then see what the holder put there, which nothing else on the machine has:

- pid: the holder is PID 1 of its PID namespace, and its command line carries
  ``{{ns_holder_token}}`` (a container in that namespace reads it at /proc/1/cmdline);
- uts: its hostname is ``{{ns_holder_hostname}}``;
- ipc: a System V shared-memory segment with key ``{{ns_holder_shm_key}}`` (decimal,
  as /proc/sysvipc/shm prints it);
- net: ``net.ipv4.ip_default_ttl`` is ``{{ns_holder_ttl}}`` there (64 everywhere else);
- mnt: a copy of the host's mount table, made a slave of it (the host's later mounts, a bundle's
  rootfs, arrive; nothing mounted there reaches the host).

``{{ns_holder_ns_TYPE}}`` is the namespace as its /proc link reads
(``pid:[4026532…]``), to compare with the container's from the host.  The
holder is started as ``python3 -c`` (standard library only: this runs on the
runtime's host, through the agent); it unshares, forks the PID 1, which sets
everything up and then waits for its stdin to close.  Leaving the setup closes
it; the namespaces go with the holder (the segment with its IPC namespace),
and a holder that does not end in time is killed.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Iterator

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
HOLDER_TYPES = ("pid", "ipc", "uts", "net", "mnt")

#: the holder itself (argv: token, shm key, ttl): unshare, fork PID 1, set up, report "ready PID", wait
_HOLDER = r"""
import ctypes, os, socket, sys
token, key, ttl = sys.argv[1], int(sys.argv[2]), sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x20000000 | 0x08000000 | 0x04000000 | 0x40000000 | 0x00020000) != 0:
    sys.exit("unshare(pid, ipc, uts, net, mnt): " + os.strerror(ctypes.get_errno()))
# MS_REC | MS_SLAVE on /: the host's mounts still arrive (a bundle mounted later), none of ours leaves
if libc.mount(None, b"/", None, 0x4000 | 0x80000, None) != 0:
    sys.exit("mount --make-rslave /: " + os.strerror(ctypes.get_errno()))
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    libc.prctl(1, 9)  # PR_SET_PDEATHSIG: SIGKILL when the parent goes
    try:
        socket.sethostname(token)
        if libc.shmget(ctypes.c_int(key), ctypes.c_size_t(4096), 0o1000 | 0o600) < 0:
            raise OSError(ctypes.get_errno(), "shmget")
        with open("/proc/sys/net/ipv4/ip_default_ttl", "w") as f:
            f.write(ttl)
        os.write(w, b"ok")
    except OSError as e:
        os.write(w, str(e).encode())
        os._exit(1)
    os.close(w)
    sys.stdin.buffer.read()  # until the harness closes our stdin
    os._exit(0)
os.close(w)
said = os.read(r, 4096)
print("ready %d" % pid if said == b"ok" else "failed: " + said.decode(errors="replace"), flush=True)
os.waitpid(pid, 0)
"""


def _stop(proc: subprocess.Popen[str]) -> None:
    """Close its stdin (the PID 1 ends, the parent with it); kill what does not end in time."""
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()  # the PID 1 gets SIGKILL too (its parent-death signal)
        proc.wait(STOP_TIMEOUT_S)


def _ready(proc: subprocess.Popen[str]) -> int:
    """The holder's PID 1 as the host numbers it, once it reported ready."""
    assert proc.stdout is not None
    import selectors
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(READY_TIMEOUT_S):
            raise OSError(f"the namespace holder did not get ready in {READY_TIMEOUT_S:g}s")
    line = proc.stdout.readline().strip()
    if not line.startswith("ready "):
        err = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
        raise OSError(f"the namespace holder failed: {line or err.strip() or 'no answer'}")
    return int(line.split()[1])


@contextlib.contextmanager
def ns_holder(workdir: Path) -> Iterator[dict[str, str]]:
    token = "cf-holder-" + secrets.token_hex(6)
    key = 0x5D000000 | secrets.randbits(24)
    ttl = str(65 + secrets.randbelow(180))  # never 64, the kernel's default
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _HOLDER, token, str(key), ttl],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        pid = _ready(proc)
        links = {f"ns_holder_ns_{t}": os.readlink(f"/proc/{pid}/ns/{t}") for t in HOLDER_TYPES}
        yield {"ns_holder": str(pid), "ns_holder_token": token, "ns_holder_hostname": token,
               "ns_holder_shm_key": str(key), "ns_holder_ttl": ttl, **links}
    finally:
        _stop(proc)
