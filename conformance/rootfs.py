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
