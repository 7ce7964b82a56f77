"""The default root filesystem: Debian's static busybox and its applet links.

Built once from the host's busybox-static (never downloaded), cached under
the user's cache dir keyed by the binary's hash, and copied per bundle: a
container may write to its root, and the cache must stay pristine for the
next one.  The copy is ~400 symlinks and one 2 MB file.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import ConformanceError

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
DIRS = ("bin", "dev", "etc", "proc", "root", "sys", "tmp", "var/tmp", "run", "mnt")
LAYOUT_VERSION = 2  # bump when _build changes, so stale caches are not reused
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnogroup:x:65534:\n"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "oci-conformance"


def find_static_busybox() -> Path:
    """The host's busybox, which must be static (it runs in an empty rootfs)."""
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file() and not _is_dynamic(path):
            return path
    raise ConformanceError(
        "no static busybox found (looked at " + ", ".join(BUSYBOX_CANDIDATES) +
        "): install Debian's busybox-static (ci/setup.sh does)")


def _is_dynamic(path: Path) -> bool:
    """True if the ELF file has a PT_INTERP program header (needs a loader)."""
    head = path.read_bytes()[:4096]
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


def busybox_rootfs() -> Path:
    """Path of the cached pristine rootfs, building it on first use (atomically)."""
    busybox = find_static_busybox()
    digest = hashlib.sha256(busybox.read_bytes()).hexdigest()[:16]
    target = cache_root() / "rootfs" / f"busybox-{digest}-v{LAYOUT_VERSION}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        _build(busybox, staging)
        try:
            staging.rename(target)  # atomic: parallel workers race here, one wins
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def copy_rootfs(source: Path, dest: Path) -> None:
    """A private, writable copy of a pristine rootfs for one container."""
    shutil.copytree(source, dest, symlinks=True)


# -- reuse: a copy that comes back untouched serves the next container ---------------
# A copy is ~420 directory entries; on a journaling file system each costs a
# metadata write, so one copy per container (15 ms on an idle disk, 200 ms on a
# busy one) was most of the harness's own time.  Each copy's manifest — every
# entry's inode, mode, size, mtime and ctime — is taken when it is made; when
# its bundle is removed and the manifest is unchanged, the copy is moved (one
# rename) to a spare directory beside the bundles and handed to the next
# bundle.  ctime cannot be set from user space, so any write, chmod, chown,
# rename or new entry (a runtime's mount point included) shows, and such a
# copy is deleted instead.  Spares live in the work dir, so they go with it.
SPARE_DIR = ".rootfs-spare"
#: (st_dev, st_ino) of a copy's top directory -> (its source, its manifest when made)
_made: dict[tuple[int, int], tuple[Path, tuple]] = {}


def _manifest(root: Path) -> tuple:
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            entries.append((path[len(str(root)):], st.st_ino, st.st_mode, st.st_uid, st.st_gid, st.st_size,
                            st.st_mtime_ns, st.st_ctime_ns))
    st = os.lstat(root)  # not its ctime: moving the copy between bundles (a rename) sets that
    return (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, tuple(entries))


def _identity(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def _spares(source: Path, workdir: Path) -> Path:
    return workdir / SPARE_DIR / source.name


def take_rootfs(source: Path, dest: Path, workdir: Path) -> None:
    """Put a pristine copy of ``source`` at ``dest``: a returned spare if one is left, else a fresh copy."""
    spares = _spares(source, workdir)
    for spare in sorted(spares.iterdir()) if spares.is_dir() else ():
        try:
            spare.rename(dest)
            return
        except OSError:
            shutil.rmtree(spare, ignore_errors=True)
    copy_rootfs(source, dest)
    _made[_identity(dest)] = (source, _manifest(dest))


def release_rootfs(rootfs: Path, workdir: Path) -> bool:
    """Keep ``rootfs`` as a spare if it is exactly as made (True); else leave it to its bundle's removal."""
    try:
        source, made = _made.pop(_identity(rootfs), (None, None))
        if source is None or _manifest(rootfs) != made:
            return False
        spares = _spares(source, workdir)
        spares.mkdir(parents=True, exist_ok=True)
        rootfs.rename(spares / rootfs.parent.name)
        _made[_identity(spares / rootfs.parent.name)] = (source, made)
        return True
    except OSError:
        return False
