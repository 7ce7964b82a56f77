"""Things a scenario needs made on the host first, and removed after.

``marker``: a file with a random token in the session's work dir, which the
container must not be able to reach.  ``sysv_shm``: a System V shared-memory
segment with a random key, which the container's IPC namespace must not show.
Both are the harness's own canaries: nothing else on the host is touched.
"""
from __future__ import annotations

import contextlib
import ctypes
import secrets
from pathlib import Path
from typing import Iterator

IPC_CREAT, IPC_RMID = 0o1000, 0


@contextlib.contextmanager
def marker(workdir: Path) -> Iterator[dict[str, str]]:
    token = "host-marker-" + secrets.token_hex(8)
    path = workdir / token
    path.write_text(token + "\n")
    try:
        yield {"host_marker": str(path), "host_marker_token": token}
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def sysv_shm(workdir: Path) -> Iterator[dict[str, str]]:
    libc = ctypes.CDLL(None, use_errno=True)
    key = 0x5C000000 | secrets.randbits(24)
    shmid = libc.shmget(ctypes.c_int(key), ctypes.c_size_t(4096), IPC_CREAT | 0o600)
    if shmid < 0:
        raise OSError(ctypes.get_errno(), "shmget failed on the host")
    try:
        # /proc/sysvipc/shm (what a container can read) prints keys in decimal
        yield {"host_shm_key": str(key), "host_shm_id": str(shmid)}
    finally:
        libc.shmctl(shmid, IPC_RMID, None)


SETUPS = {"marker": marker, "sysv_shm": sysv_shm}


@contextlib.contextmanager
def prepared(names: tuple[str, ...], workdir: Path) -> Iterator[dict[str, str]]:
    """Enter every named setup; all are undone on exit, whatever happened."""
    with contextlib.ExitStack() as stack:
        variables: dict[str, str] = {}
        for name in names:
            variables.update(stack.enter_context(SETUPS[name](workdir)))
        yield variables
