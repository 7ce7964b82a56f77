"""The matrix's areas: which DESIGN.md tags belong together, and in which order they are shown.

A scenario's area is that of its first tag that has one (authors list the
main tag first).  The matrix, the HTML overview and docs/catalog.md group
rows by it.
"""
from __future__ import annotations

#: The matrix's areas in display order, and the DESIGN.md tags that belong to each.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("namespaces", ("pid", "net", "mnt", "uts", "ipc", "user", "cgroupns", "time", "sysctl")),
    ("cgroups", ("memory", "pids", "cpu", "io", "freezer", "cgroupfs")),
    ("rootfs/overlay", ("overlay", "rootfs", "pivot_root", "readonly-rootfs")),
    ("security", ("masked-paths", "readonly-paths", "devices", "caps", "seccomp", "nnp", "rlimits", "process", "lsm",
                  "fds", "cve")),
    ("lifecycle", ("lifecycle", "state", "hooks", "exit-code")),
    # the command line itself: scripts and engines call it, and a typo they make must not pass as a success
    ("cli", ("cli",)),
)
OTHER_AREA = "other"
_AREA_OF_TAG = {tag: name for name, tags in AREAS for tag in tags}


def area(tags: list[str] | tuple[str, ...]) -> str:
    """A scenario's area: the area of its first tag that has one (authors list the main tag first)."""
    return next((_AREA_OF_TAG[t] for t in tags if t in _AREA_OF_TAG), OTHER_AREA)
