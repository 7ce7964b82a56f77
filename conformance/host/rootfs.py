"""The default root filesystem: Debian's static busybox and its applet links.

Built once from the host's busybox-static (never downloaded), cached under
the user's cache dir keyed by the binary's hash, and copied per bundle: a
container may write to its root, and the cache must stay pristine for the
next one.  The copy is ~400 symlinks and one 2 MB file.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from conformance.model.cache_dir import cache_root
from conformance.model.errors import ConformanceError

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
DIRS = ("bin", "dev", "etc", "proc", "root", "sys", "tmp", "var/tmp", "run", "mnt")
LAYOUT_VERSION = 2  # bump when _build changes, so stale caches are not reused
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def find_static_busybox() -> Path:
    """The host's busybox, which must be static (it runs in an empty rootfs)."""
    for candidate in BUSYBOX_CANDIDATES:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and not _is_dynamic(candidate, st.st_size, st.st_mtime_ns):
            return Path(candidate)
    raise ConformanceError(
        "no static busybox found (looked at " + ", ".join(BUSYBOX_CANDIDATES) +
        "): install Debian's busybox-static (ci/setup.sh does)")


@functools.lru_cache(maxsize=8)
def _is_dynamic(path: str, size: int, mtime_ns: int) -> bool:
    """True if the ELF file has a PT_INTERP program header (needs a loader).  Read once per process
    and version of the file (every bundle asks, ~0.05 ms each)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return b"ld-linux" in head or b"/lib64/ld" in head


def _applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    return [name for name in out.stdout.split() if name and "/" not in name]


def _build(busybox: Path, dest: Path) -> None:
    dest.chmod(0o755)  # the staging dir is mkdtemp's 0700; a userns root must enter it
    for d in DIRS:
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    for applet in _applets(busybox):
        link = dest / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (dest / "usr").mkdir(exist_ok=True)
    for alias in ("usr/bin", "sbin", "usr/sbin"):
        (dest / alias).symlink_to("/bin")
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    (dest / "etc" / "hostname").write_text("conformance\n")


def cached_build(target: Path, build: Callable[[Path], None]) -> Path:
    """``target`` in the cache, made by ``build(staging_dir)`` on first use.

    The build happens in a sibling staging dir that is renamed into place, so
    parallel workers racing here see either nothing or a complete tree.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        staging.chmod(0o755)  # mkdtemp's 0700 would shut out a user-namespaced root
        build(staging)
        try:
            staging.rename(target)  # atomic: one racer wins, the others find it built
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def busybox_rootfs() -> Path:
    """Path of the cached pristine rootfs, building it on first use (atomically)."""
    busybox = find_static_busybox()
    st = busybox.stat()
    target = cache_root() / "rootfs" / f"busybox-{_digest(str(busybox), st.st_size, st.st_mtime_ns)}-v{LAYOUT_VERSION}"
    return cached_build(target, lambda staging: _build(busybox, staging))


@functools.lru_cache(maxsize=4)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """The binary's content hash, computed once per process and version of the file (2 MB read and
    hashed for every bundle was a measurable part of a scenario's cost)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def copy_rootfs(source: Path, dest: Path, owner: tuple[int, int] | None = None) -> None:
    """A private, writable copy of a pristine rootfs for one container.

    ``owner``: every entry of the copy belongs to that uid and gid instead of
    the cache's root — what an unprivileged user's own unpacked rootfs is (the
    rootless lane: its container root is that user).
    """
    shutil.copytree(source, dest, symlinks=True)
    if owner is not None:
        chown_tree(dest, *owner)


def chown_tree(top: Path, uid: int, gid: int) -> None:
    """Every entry under ``top`` (itself included, links not followed) to ``uid``:``gid``, modes kept
    (chown clears set-id bits: they are put back)."""
    for dirpath, dirnames, filenames in os.walk(top):  # a directory is its own dirpath once; links are names
        links = [n for n in dirnames if os.path.islink(os.path.join(dirpath, n))]
        for path in [dirpath, *(os.path.join(dirpath, n) for n in filenames + links)]:
            st = os.lstat(path)
            os.lchown(path, uid, gid)
            if st.st_mode & 0o6000 and not stat.S_ISLNK(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode))


# -- reuse: a copy that comes back unchanged serves the next container ---------------
# A copy is ~420 directory entries; on a journaling file system each costs a
# metadata write, so one copy per container (15 ms on an idle disk, 200 ms on a
# busy one) was most of the harness's own time.  Each copy's manifest — every
# entry's inode, mode, owner, size, mtime and ctime — is taken when it is made.
# When its bundle is removed, the copy is kept as a spare for the next bundle
# (one rename) if every entry it was made with is still there, unchanged;
# entries added since (a runtime's mount points, files a scenario wrote) are
# removed first.  ctime cannot be set from user space, so any write, chmod,
# chown, link or rename of an original entry shows, and such a copy is
# deleted instead.  A directory may differ only in mtime/ctime/size, which
# adding and removing entries sets.  Nothing is removed across a mount point.
#
# The check reads a directory's listing only when the directory changed (its
# size, mtime or ctime), and skips the symlinks of a directory that did not:
# a symlink's target cannot change in place, only by a new link, which changes
# its directory (an lchown of a link is not seen; nothing a scenario holds
# depends on a link's owner).  Timestamps are coarse (one kernel tick), so a
# directory modified within TRUST_AFTER_NS of when its manifest was taken is
# listed all the same.  Under emulation this made the check ~20x cheaper.
SPARE_DIR = ".rootfs-spare"
Stat = Tuple[int, int, int, int, int, int, int, int]   # dev, ino, mode, uid, gid, size, mtime, ctime
TRUST_AFTER_NS = 50_000_000


class _Manifest:
    """A copy's entries as made (relative path -> Stat), by directory, and when that was taken."""

    def __init__(self, entries: Dict[str, Stat]) -> None:
        self.entries = entries
        self.children: Dict[str, list[str]] = {rel: [] for rel, st in entries.items() if stat.S_ISDIR(st[2])}
        for rel in entries:
            if rel:
                self.children[rel.rpartition("/")[0]].append(rel)
        # each directory's children by kind, sorted once here rather than at every check (_changes)
        self.subdirs = {rel: [c for c in kids if stat.S_ISDIR(entries[c][2])] for rel, kids in self.children.items()}
        self.files = {rel: [c for c in kids if not stat.S_ISDIR(entries[c][2]) and not stat.S_ISLNK(entries[c][2])]
                      for rel, kids in self.children.items()}
        self.links = {rel: [c for c in kids if stat.S_ISLNK(entries[c][2])] for rel, kids in self.children.items()}
        self.taken_ns = time.time_ns()

    def unchanged_listing(self, rel: str, now: Stat) -> bool:
        was = self.entries[rel]
        return now[5:] == was[5:] and was[6] < self.taken_ns - TRUST_AFTER_NS


#: (st_dev, st_ino) of a copy's top directory -> (its source, its manifest, its owner)
_made: dict[tuple[int, int], tuple[Path, _Manifest, Optional[Tuple[int, int]]]] = {}


def _stat(path: str) -> Stat:
    st = os.lstat(path)
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _manifest(root: Path) -> Dict[str, Stat]:
    top = str(root)
    entries = {"": _stat(top)}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            entries[path[len(top):]] = _stat(path)
    return entries


def _identity(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def _spares(source: Path, workdir: Path, owner: tuple[int, int] | None = None) -> Path:
    """Where returned copies of ``source`` wait (per owner: a copy is only ever reused as it was made)."""
    return workdir / SPARE_DIR / (source.name if owner is None else f"{source.name}-{owner[0]}-{owner[1]}")


def _changes(root: Path, made: _Manifest) -> tuple[list[str], list[str]] | None:
    """(entries added, directories whose listing changed) since ``made``; None if an original entry changed."""
    top = str(root)
    added: list[str] = []
    relisted: list[str] = []
    pending = [""]
    while pending:
        rel = pending.pop()
        now = _stat(top + rel)
        if now[:5] != made.entries[rel][:5]:
            return None
        trusted = made.unchanged_listing(rel, now)
        if not trusted:
            relisted.append(rel)
            names = {f"{rel}/{name}" for name in os.listdir(top + rel)}
            if not names.issuperset(made.children[rel]):
                return None  # an original entry is gone
            added += sorted(names.difference(made.children[rel]))
        pending += made.subdirs[rel]
        for child in made.files[rel] if trusted else made.files[rel] + made.links[rel]:
            if _stat(top + child) != made.entries[child]:
                return None
    return added, relisted


def _on_one_device(path: str, device: int) -> bool:
    """``path`` and, for a directory, everything below it are on ``device`` (nothing mounted there)."""
    if os.lstat(path).st_dev != device:
        return False
    for dirpath, dirnames, filenames in os.walk(path):
        if any(os.lstat(os.path.join(dirpath, n)).st_dev != device for n in dirnames + filenames):
            return False
    return True


def _restore(root: Path, made: _Manifest) -> bool:
    """Bring a used copy back to ``made`` by removing added entries; False if that cannot be done."""
    try:
        found = _changes(root, made)
    except FileNotFoundError:
        return False
    if found is None:
        return False
    added, relisted = found
    device = made.entries[""][0]
    if not all(_on_one_device(str(root) + rel, device) for rel in added):
        return False  # something is mounted there: never delete through a mount point
    for rel in added:
        path = str(root) + rel
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    for rel in relisted:  # as they are now, after the removals: the next check can trust them again
        made.entries[rel] = _stat(str(root) + rel)
    made.taken_ns = time.time_ns()
    return True


def take_rootfs(source: Path, dest: Path, workdir: Path, owner: tuple[int, int] | None = None) -> None:
    """Put a pristine copy of ``source`` at ``dest`` (owned by ``owner``, see copy_rootfs): a returned
    spare if one is left, else a fresh copy."""
    spares = _spares(source, workdir, owner)
    for spare in sorted(spares.iterdir()) if spares.is_dir() else ():
        try:
            spare.rename(dest)
            return
        except OSError:
            shutil.rmtree(spare, ignore_errors=True)
    copy_rootfs(source, dest, owner)
    _made[_identity(dest)] = (source, _Manifest(_manifest(dest)), owner)


def release_rootfs(rootfs: Path, workdir: Path) -> bool:
    """Keep ``rootfs`` as a spare if it can be brought back to how it was made (True); else leave it to
    its bundle's removal (False)."""
    try:
        entry = _made.pop(_identity(rootfs), None)
        if entry is None:
            return False
        source, made, owner = entry
        if not _restore(rootfs, made):
            return False
        spares = _spares(source, workdir, owner)
        spares.mkdir(parents=True, exist_ok=True)
        rootfs.rename(spares / rootfs.parent.name)
        _made[_identity(spares / rootfs.parent.name)] = (source, made, owner)
        return True
    except OSError:
        return False
