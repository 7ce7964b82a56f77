"""Clean-up that no verdict waits for, done while the harness would otherwise only wait.

A finished container's bundle (its config, its rootfs copy returned to the
spares) has to go, but nothing about the scenario's verdict depends on when.
Removed at once, it delays the next scenario by ~0.4 ms of the harness's own
work on every cell; queued here, it is done inside the next wait for a runtime
(drivers/procs.py polls every 0.5 ms while the runtime works on the other
CPUs), where that time was spent sleeping.  What must be seen before a verdict
— the leftover check of a container's cgroups, its output — is never queued.

The queue is this process's: ``finish`` (RunSession.close) does what is left
and returns what failed, so nothing queued outlives the session, also after
Ctrl-C.  At most ``QUEUE_MAX`` pieces wait (a run of skipped scenarios makes
no waits): beyond that the oldest is done at once.
"""
from __future__ import annotations

import collections
from typing import Callable

#: pieces of work that may wait at once (each holds a bundle's rootfs copy: ~2 MB)
QUEUE_MAX = 2

_queue: collections.deque[Callable[[], None]] = collections.deque()
_failed: list[str] = []
_busy = False


def later(work: Callable[[], None]) -> None:
    """Do ``work`` in a coming wait (or by ``finish``); it must not raise for a normal outcome."""
    _queue.append(work)
    while len(_queue) > QUEUE_MAX:
        step()


def step() -> bool:
    """Do the oldest piece of queued work (True), or nothing when none is queued or one runs (False).

    A wait calls this instead of one of its sleeps."""
    global _busy
    if not _queue or _busy:
        return False
    work = _queue.popleft()
    _busy = True
    try:
        work()
    except Exception as exc:  # noqa: BLE001 - said by finish(), as the session's leftovers are
        _failed.append(f"deferred clean-up {getattr(work, '__qualname__', work)!s} failed: {exc}")
    finally:
        _busy = False
    return True


def finish() -> list[str]:
    """Do everything still queued, now; what failed since the last call."""
    while step():
        pass
    failed = list(_failed)
    _failed.clear()
    return failed
