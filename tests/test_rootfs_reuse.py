"""A container's rootfs copy is reused only when it can be brought back exactly as made."""
from __future__ import annotations

import os
import subprocess
import time

from conformance.host.rootfs import busybox_rootfs, release_rootfs, take_rootfs


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


def test_added_entries_are_removed_and_the_copy_reused(tmp_path):
    rootfs = _take(tmp_path, "a")
    inode = os.lstat(rootfs).st_ino
    (rootfs / "scratch").mkdir()                       # a runtime's mount point
    (rootfs / "mnt" / "x" / "bin").mkdir(parents=True)  # a scenario's files, nested
    (rootfs / "mnt" / "x" / "bin" / "sh").write_text("#!/bin/sh\n")
    (rootfs / "probe").symlink_to("/bin/busybox")
    assert release_rootfs(rootfs, tmp_path) is True
    again = _take(tmp_path, "b")
    assert os.lstat(again).st_ino == inode
    assert not (again / "scratch").exists() and not (again / "mnt" / "x").exists()
    assert not os.path.lexists(again / "probe") and (again / "mnt").is_dir()
    assert release_rootfs(again, tmp_path) is True


def test_nothing_is_removed_through_a_mount_point(tmp_path):
    rootfs = _take(tmp_path, "a")
    target = rootfs / "hostdir"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)], check=True)
    try:
        (target / "precious").write_text("must survive\n")
        assert release_rootfs(rootfs, tmp_path) is False
        assert (target / "precious").read_text() == "must survive\n"
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def test_a_reused_copy_is_checked_as_strictly_once_its_directories_are_trusted(tmp_path):
    """After a round trip the check skips the listings of directories that did not change; a change
    made later still shows in the directory's own times (or in the entry's), and the copy is not reused."""
    changes = {
        "removed link": lambda r: (r / "bin" / "ls").unlink(),
        "link replaced": lambda r: ((r / "bin" / "cat").unlink(), (r / "bin" / "cat").symlink_to("sh")),
        "added file": lambda r: (r / "bin" / "extra").write_text("x"),
        "write": lambda r: (r / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n"),
    }
    for i, (what, change) in enumerate(changes.items()):
        rootfs = _take(tmp_path, f"d{i}")
        time.sleep(0.06)  # the copy's directories are older than the timestamps' granularity …
        assert release_rootfs(rootfs, tmp_path) is True  # … when this check takes them: trusted from now on
        again = _take(tmp_path, f"e{i}")
        change(again)
        kept = release_rootfs(again, tmp_path)
        if what == "added file":  # an addition is removed, and the copy kept
            assert kept is True and not list((tmp_path / ".rootfs-spare").rglob("extra"))
        else:
            assert kept is False, what
