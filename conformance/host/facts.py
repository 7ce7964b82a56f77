"""Host facts that are not one file's text: a path's owner and mode, the container's cgroup view, its tasks.

Each reader returns the value as text, one line per item, so the scenario's
matchers (model/matchers.py) judge it as they judge a /proc file; what the
kernel reports is kept as it is, and a reader never decides anything.

- ``host_stat: PATH`` — ``uid=U gid=G mode=0MMM`` of a host path (the runtime must
  not take over the files it is handed as stdio), or ``<absent>`` (nothing may be
  made there: a runtime that follows a rootfs symlink out of the root would).
- ``cgroup_view`` — one line per cgroup mount the container's mount table holds
  (``/proc/<pid>/mountinfo``): ``MOUNTPOINT root=ROOT own=OWN caller=CALLER ro|rw``,
  where ROOT is the directory of the hierarchy that is mounted there, OWN the
  container's own cgroup in that hierarchy (``/proc/<pid>/cgroup``) and CALLER
  the harness's (the runtime's caller).  A container that sees only its own
  cgroup has ROOT = OWN on every line; one with a cgroup of its own has OWN ≠ CALLER.
- ``tasks`` — one line per process of the container's cgroup as the host sees
  it, ``PID STATE WCHAN COMM`` (STATE as /proc/<pid>/stat has it, WCHAN where it
  sleeps in the kernel, 0 when it runs: a task the v1 freezer holds reads D, one
  the v2 freezer holds S in get_signal); nothing once the cgroup is gone.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import cgroupfs

ABSENT = "<absent>"  # as layer_file reads a path no layer has


def host_stat(path: str) -> str:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ABSENT
    return f"uid={st.st_uid} gid={st.st_gid} mode={st.st_mode & 0o7777:04o}"


def _hierarchy(fstype: str, super_options: str) -> str:
    """The key of a cgroup mount's hierarchy in /proc/<pid>/cgroup ("" for cgroup2)."""
    if fstype == "cgroup2":
        return ""
    for opt in super_options.split(","):
        if opt in cgroupfs.V1_CONTROLLERS or opt.startswith("name="):
            return opt
    return "?"


def cgroup_view(pid: int) -> str:
    own = cgroupfs.process_cgroups(pid)
    caller = cgroupfs.process_cgroups(os.getpid())
    lines = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, (fstype, _source, super_options) = left.split(), (right.split() + ["", "", ""])[:3]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        key = _hierarchy(fstype, super_options)
        access = "ro" if "ro" in fields[5].split(",") else "rw"
        lines.append(f"{fields[4]} root={fields[3]} own={own.get(key, '?')} caller={caller.get(key, '?')} {access}")
    return "\n".join(sorted(lines))


#: where a container's processes are listed: a v1 hierarchy every runtime places it in, else the unified one
_TASK_HIERARCHIES = ("pids", "freezer", "memory", "cpu", "devices", "")


def _cgroup_dir(paths: dict[str, str], mount_map: dict[str, Path]) -> Path:
    for key in _TASK_HIERARCHIES:
        if key in paths and key in mount_map:
            if paths[key] == "/":
                raise LookupError(f"the container is in the root of the {key or 'unified'} hierarchy: "
                                  "its tasks cannot be told from the host's")
            return mount_map[key] / paths[key].lstrip("/")
    raise LookupError("the container is in no cgroup hierarchy mounted here")


def tasks(paths: dict[str, str], mount_map: dict[str, Path]) -> str:
    """``paths``: the container's cgroups as read when it was created (it may be gone since)."""
    directory = _cgroup_dir(paths, mount_map)
    if not directory.is_dir():
        return ""
    lines = []
    for pid in sorted(int(p) for p in (directory / "cgroup.procs").read_text().split()):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # exited between the two reads
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:]
        lines.append(f"{pid} {rest.split()[0]} {_wchan(pid)} {comm}")
    return "\n".join(lines)


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text().strip() or "0"
    except OSError:
        return "?"


def proc_entry(path: Path) -> str:
    """A /proc/<pid> entry that is not a plain file: a link's target, or a directory's entries
    (``NAME -> TARGET`` for links, such as fd/), numbers in numeric order."""
    if path.is_symlink():
        return os.readlink(path)
    names = sorted(os.listdir(path), key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))
    out = []
    for name in names:
        entry = path / name
        try:
            out.append(f"{name} -> {os.readlink(entry)}" if entry.is_symlink() else name)
        except OSError:
            continue  # closed meanwhile
    return "\n".join(out)
