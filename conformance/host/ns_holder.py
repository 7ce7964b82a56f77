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
(``pid:[4026532…]``), to compare with the container's from the host.

The holder is util-linux's ``unshare --fork`` running ``sh`` as PID 1 (HOLDER),
not a Python program: a Python holder spent ~20 ms of each scenario starting
an interpreter and importing ctypes, this one ~3.5 ms.  It needs nothing but
what a host has anyway (``sh``, util-linux's ``unshare`` and ``ipcmk``; this
runs on the runtime's host, through the agent).  The shell writes the
hostname and the TTL through /proc/sys (both belong to the writer's
namespaces), and ``ipcmk`` makes the segment: it chooses the key itself
(util-linux before 2.40 takes none), so the shell reads it back from
/proc/sysvipc/shm (its IPC namespace's, where that segment is the only one)
and reports it with its own PID as the host numbers it (/proc is the host's
procfs: ``/proc/self`` names the process in the host's PID namespace).

The shell then waits for its stdin to close.  Leaving the setup closes it;
the namespaces go with the holder (the segment with its IPC namespace), and a
holder that does not end in time is killed: ``unshare`` with SIGKILL, which
``--kill-child`` passes on to the PID 1.  A harness killed outright closes
the pipe too, so no holder outlives the process that made it.
"""
from __future__ import annotations

import contextlib
import functools
import os
import secrets
import selectors
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

from .drivers.procs import ended_within

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
HOLDER_TYPES = ("pid", "ipc", "uts", "net", "mnt")

#: ``unshare``: the namespaces, / a slave of the host's (a bundle mounted later still arrives, none of
#: ours leaves), the PID 1 forked, and SIGKILL for it when ``unshare`` ends before it
UNSHARE = ["unshare", "--pid", "--ipc", "--uts", "--net", "--mount", "--propagation", "slave",
           "--fork", "--kill-child=SIGKILL"]

#: the PID 1 (``sh -c HOLDER TOKEN TTL``: $0 is the token, in its command line): set up, report
#: "ready HOST_PID SHM_KEY", wait for stdin's end; any failure ends it, with the reason on stderr
HOLDER = r"""set -e
read -r pid _ < /proc/self/stat
printf %s "$0" > /proc/sys/kernel/hostname
printf %s "$1" > /proc/sys/net/ipv4/ip_default_ttl
ipcmk --shmem 4096 --mode 0600 > /dev/null
{ read -r _; read -r key _; } < /proc/sysvipc/shm
echo "ready $pid $key"
read -r _ || exit 0
"""


def _stop(proc: subprocess.Popen[str]) -> None:
    """Close its stdin (the PID 1 ends, ``unshare`` with it); kill what does not end in time.

    Awaited on a pidfd (procs.ended_within): subprocess's own wait with a timeout
    polls with growing sleeps, and cost a few ms here where the holder ends in
    well under one.
    """
    if proc.stdin is not None:
        proc.stdin.close()
    if not ended_within(proc, STOP_TIMEOUT_S):
        proc.kill()  # the PID 1 gets SIGKILL too (--kill-child)
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _ready(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """The holder's PID 1 as the host numbers it, and its segment's key, once it reported ready."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(READY_TIMEOUT_S):
            raise OSError(f"the namespace holder did not get ready in {READY_TIMEOUT_S:g}s")
    line = proc.stdout.readline()
    words = line.split()
    if len(words) != 3 or words[0] != "ready":
        raise OSError(f"the namespace holder failed: {line.strip() or _last_words(proc) or 'no answer'}")
    return int(words[1]), words[2]


def _last_words(proc: subprocess.Popen[str]) -> str:
    """What a holder that ended without reporting ready wrote to its stderr (``set -e``: the failed step)."""
    if proc.stderr is None or not ended_within(proc, STOP_TIMEOUT_S):
        return ""
    return proc.stderr.read().strip()[-300:]


@functools.lru_cache(maxsize=1)
def _missing_tool() -> str | None:
    """The first tool the holder needs that this host lacks, with its package."""
    for tool, package in (("unshare", "util-linux"), ("ipcmk", "util-linux"), ("sh", "a POSIX shell")):
        if shutil.which(tool) is None:
            return f"ns_holder needs {package}'s `{tool}` on the runtime's host"
    return None


@contextlib.contextmanager
def ns_holder(workdir: Path) -> Iterator[dict[str, str]]:
    missing = _missing_tool()
    if missing is not None:
        raise OSError(missing)
    token = "cf-holder-" + secrets.token_hex(6)
    ttl = str(65 + secrets.randbelow(180))  # never 64, the kernel's default
    proc = subprocess.Popen([*UNSHARE, "sh", "-c", HOLDER, token, ttl],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        pid, key = _ready(proc)
        links = {f"ns_holder_ns_{t}": os.readlink(f"/proc/{pid}/ns/{t}") for t in HOLDER_TYPES}
        yield {"ns_holder": str(pid), "ns_holder_token": token, "ns_holder_hostname": token,
               "ns_holder_shm_key": key, "ns_holder_ttl": ttl, **links}
    finally:
        _stop(proc)
