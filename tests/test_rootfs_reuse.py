"""A container's rootfs copy is reused only when it came back exactly as made."""
from __future__ import annotations

import os

from conformance.rootfs import busybox_rootfs, release_rootfs, take_rootfs


def _take(workdir, name):
    (workdir / name).mkdir()
    dest = workdir / name / "rootfs"
    take_rootfs(busybox_rootfs(), dest, workdir)
    return dest


def test_an_untouched_copy_serves_the_next_bundle(tmp_path):
    first = _take(tmp_path, "a")
    inode = os.lstat(first).st_ino
    assert (first / "bin" / "busybox").is_file() and os.readlink(first / "bin" / "sh") == "busybox"
    assert release_rootfs(first, tmp_path) is True
    second = _take(tmp_path, "b")
    assert os.lstat(second).st_ino == inode, "the spare was moved, not copied"
    assert release_rootfs(second, tmp_path) is True, "a move between bundles is no change"


def test_any_change_makes_a_fresh_copy(tmp_path):
    changes = {
        "write": lambda r: (r / "etc" / "hostname").write_text("changed\n"),
        "same-size write": lambda r: (r / "etc" / "hostname").write_text("CONFORMANCE\n"),
        "chmod": lambda r: os.chmod(r / "etc" / "passwd", 0o600),
        "new mount point": lambda r: (r / "scratch").mkdir(),
        "removed link": lambda r: (r / "bin" / "ls").unlink(),
        "mtime put back (ctime shows it)": lambda r: os.utime(r / "bin" / "busybox", ns=(0, os.lstat(r / "bin" / "busybox").st_mtime_ns)),
    }
    for i, (what, change) in enumerate(changes.items()):
        rootfs = _take(tmp_path, f"b{i}")
        inode = os.lstat(rootfs).st_ino
        change(rootfs)
        assert release_rootfs(rootfs, tmp_path) is False, what
        again = _take(tmp_path, f"c{i}")
        assert os.lstat(again).st_ino != inode, what
        assert (again / "etc" / "hostname").read_text() == "conformance\n" and (again / "bin" / "ls").is_symlink()
        release_rootfs(again, tmp_path)
