"""A layered image, built here and mounted the way an engine's snapshotter does.

A scenario's ``image: {layers: [...]}`` describes each layer as a change set
(files, directories, symlinks, whiteouts, opaque directories).  Each layer
becomes what a registry would have served: an OCI layer tarball, where a
removal is an empty ``.wh.NAME`` entry and "hide everything below in this
directory" is an empty ``.wh..wh..opq`` entry.  The tarball is built
deterministically, so its sha256 is its content address (an OCI diff id).

Unpacking follows containerd's overlay snapshotter (``archive.Apply`` with
its overlay whiteout conversion): each layer is unpacked into a directory of
its own, a ``.wh.NAME`` entry becomes a 0/0 character device NAME (overlayfs's
whiteout) and ``.wh..wh..opq`` the ``trusted.overlay.opaque=y`` xattr on its
directory.  Unpacked layers are cached by digest under the user's cache dir
and shared by every container of the image, read-only by construction: the
kernel never writes to a lowerdir.

Per container, an overlay is mounted at the bundle's ``rootfs`` with the
unpacked layers (over the cached busybox rootfs, the base) as lowerdirs and
an ``upper``/``work`` pair inside the bundle, so the container's writes live
in the bundle and go with it.  ``ImageMount.unmount`` (called by
``Bundle.remove``) unmounts it, and ``unmount_tree`` is the safety net for a
work dir that is removed with something still mounted in it.

Standard library only: the agent runs this on remote hosts.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import os
import posixpath
import shutil
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from conformance.model.cache_dir import cache_root

from ..model.image_spec import OPAQUE_MARKER, WHITEOUT_PREFIX, ImageError, ImageSpec
from .rootfs import busybox_rootfs, cached_build, chown_tree

OPAQUE_XATTR = "trusted.overlay.opaque"
#: who the bare lane's snapshotter is (the matrix says so beside each image scenario's cell)
HARNESS_SNAPSHOTTER = "the harness (conformance/host/image.py: containerd's overlay conversion, done by hand)"
UNPACK_VERSION = 1  # bump when unpack() changes, so stale cached layers are not reused
MNT_DETACH = 2


# -- unpacking, as a snapshotter does -------------------------------------------------
def _member_path(dest: Path, name: str) -> Path:
    rel = posixpath.normpath(name[2:] if name.startswith("./") else name)
    if rel.startswith("/") or rel in (".", "..") or rel.startswith("../"):
        raise ImageError(f"layer entry {name!r} points outside the layer")
    return dest / rel


def unpack(tar: bytes, dest: Path) -> None:
    """Apply one layer tarball to an empty directory, converting whiteouts for overlayfs."""
    dirs: list[tuple[Path, tarfile.TarInfo]] = []
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        for m in tf:
            path = _member_path(dest, m.name.rstrip("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            name = path.name
            if name == OPAQUE_MARKER:  # the directory hides every entry of the layers below
                os.setxattr(path.parent, OPAQUE_XATTR, b"y")
            elif name.startswith(WHITEOUT_PREFIX):  # NAME is removed: a 0/0 char device hides it
                os.mknod(path.parent / name[len(WHITEOUT_PREFIX):], stat.S_IFCHR | 0o000, os.makedev(0, 0))
            elif m.isdir():
                path.mkdir(exist_ok=True)
                dirs.append((path, m))
            elif m.isreg():
                reader = tf.extractfile(m)
                path.write_bytes(reader.read() if reader else b"")
                os.chmod(path, m.mode & 0o7777)
                os.chown(path, m.uid, m.gid)
                os.utime(path, (m.mtime, m.mtime))
            elif m.issym():
                os.symlink(m.linkname, path)
                os.lchown(path, m.uid, m.gid)
            elif m.islnk():
                os.link(_member_path(dest, m.linkname), path)
            else:
                raise ImageError(f"layer entry {m.name!r}: type {m.type!r} is not supported here")
    for path, m in reversed(dirs):  # after their children, which change a directory's mtime
        os.chmod(path, m.mode & 0o7777)
        os.chown(path, m.uid, m.gid)
        os.utime(path, (m.mtime, m.mtime))


def _check_overlay_option_safe(path: Path) -> None:
    if any(c in str(path) for c in ":,\\"):
        raise ImageError(f"{path}: overlayfs mount options cannot name a path with ':', ',' or '\\' "
                         "(set XDG_CACHE_HOME or TMPDIR elsewhere)")


def layer_dir(tar: bytes) -> Path:
    """The unpacked layer for a tarball, from the cache (keyed by its sha256) or unpacked now."""
    digest = hashlib.sha256(tar).hexdigest()
    target = cache_root() / "layers" / f"v{UNPACK_VERSION}" / f"sha256-{digest}"
    return cached_build(target, lambda staging: unpack(tar, staging))


# -- mounting ---------------------------------------------------------------------
_libc = None


def _mount(source: str, target: Path, fstype: str, flags: int, data: str) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.mount(source.encode(), str(target).encode(), fstype.encode(), flags, data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount -t {fstype} on {target} failed: {os.strerror(err)} "
                           f"(options {data[:300]}; the kernel's reason is in dmesg)")


def _umount(target: str, flags: int = 0) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return 0 if _libc.umount2(target.encode(), flags) == 0 else ctypes.get_errno()


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace, in mount order."""
    root = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == root or point.startswith(root.rstrip("/") + "/"):
                found.append(point)
    return found


def unmount_tree(path: Path) -> list[str]:
    """Unmount everything at or below ``path``, deepest first; busy ones lazily. Returns what was mounted."""
    points = mounts_under(path)
    for point in reversed(points):
        if _umount(point) == errno.EBUSY:
            _umount(point, MNT_DETACH)
    return points


def overlay_options(lowers: list[Path], upper: Path | None = None, work: Path | None = None) -> str:
    """overlayfs mount data: lowerdirs top first (as the kernel wants), then upper and work."""
    for p in [*lowers, *(p for p in (upper, work) if p)]:
        _check_overlay_option_safe(p)
    data = "lowerdir=" + ":".join(str(p) for p in lowers)
    return data + (f",upperdir={upper},workdir={work}" if upper and work else "")


@dataclass
class ImageMount:
    """One container's overlay: its target (the bundle's rootfs), its layers and its upper dir."""

    target: Path
    upper: Path
    work: Path
    base: Path
    layers: list[Path]  # unpacked scenario layers, bottom first (layer 1 is layers[0])

    @property
    def lowers(self) -> list[Path]:
        """lowerdirs as overlayfs orders them: the topmost first, the base last."""
        return [*reversed(self.layers), self.base]

    def variables(self) -> dict[str, str]:
        """Placeholders for host facts: {{upperdir}}, {{lowerdirs}}, {{layer_1}} … (1 = the lowest)."""
        out = {"upperdir": str(self.upper), "lowerdirs": ":".join(map(str, self.lowers)),
               "image_base": str(self.base), "snapshotter": HARNESS_SNAPSHOTTER}
        out.update({f"layer_{i}": str(p) for i, p in enumerate(self.layers, 1)})
        return out

    def unmount(self) -> None:
        """Unmount the overlay (and anything a runtime left mounted on it); idempotent."""
        unmount_tree(self.target)


class Snapshotter(Protocol):
    """Who unpacks and mounts a scenario's image for a lane: the harness itself (``mount_image``, the
    bare lane), or an engine's own snapshotter (engine/images.py)."""

    def mount(self, spec: ImageSpec, bundle_dir: Path, target: Path) -> ImageMount: ...


#: in a work dir: the unpacked layers and base as one owner has them (see owned_copy)
OWNED_DIR = ".owned"


def owned_copy(source: Path, owner: tuple[int, int], workdir: Path) -> Path:
    """A copy of a cached layer (or the base) whose every entry belongs to ``owner``, made once per
    work dir: what an unprivileged user's own unpack of the image is (the rootless lane), while the
    shared cache stays root's.  ``cp -a`` keeps whiteout nodes and the opaque xattr."""
    def build(staging: Path) -> None:
        done = subprocess.run(["cp", "-a", f"{source}/.", str(staging)], capture_output=True, text=True)
        if done.returncode != 0:
            raise ImageError(f"cannot copy {source} for uid {owner[0]}: {done.stderr.strip()}")
        chown_tree(staging, *owner)
    return cached_build(workdir / OWNED_DIR / f"{owner[0]}-{owner[1]}" / source.name, build)


def mount_image(spec: ImageSpec, bundle_dir: Path, target: Path,
                owner: tuple[int, int] | None = None) -> ImageMount:
    """Unpack (or reuse) every layer and mount the overlay at ``target``; upper/work go in ``bundle_dir``.

    ``owner``: the layers, the base and the upper dir belong to that uid and gid (owned_copy).
    """
    layers = [layer_dir(layer.tar()) for layer in spec.layers]
    base = busybox_rootfs()
    if owner is not None:
        layers = [owned_copy(layer, owner, bundle_dir.parent) for layer in layers]
        base = owned_copy(base, owner, bundle_dir.parent)
    upper, work = bundle_dir / "upper", bundle_dir / "work"
    for d in (target, upper, work):
        d.mkdir(mode=0o755)
    upper.chmod(0o755)  # the merged root's mode is the upper dir's (mkdir's is masked by umask)
    if owner is not None:
        os.chown(upper, *owner)
    mounted = ImageMount(target, upper, work, base, layers)
    try:
        _mount("overlay", target, "overlay", 0, overlay_options(mounted.lowers, upper, work))
    except BaseException:  # Ctrl-C right after the mount call must not leave it mounted
        mounted.unmount()
        raise
    return mounted


# -- host facts: a path in one layer, the upper dir, or the image as a new container sees it
def _in_root(root: str, path: str) -> str:
    """``path`` inside ``root``, following symlinks of its parents as the container would (never out)."""
    parts, hops = [p for p in path.split("/") if p], 0
    resolved: list[str] = []
    while len(parts) > 1:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved[:-1]
            continue
        here = os.path.join(root, *resolved, part)
        if os.path.islink(here):
            hops += 1
            if hops > 40:
                raise ImageError(f"too many symlinks resolving {path}")
            target = os.readlink(here)
            resolved = [] if target.startswith("/") else resolved
            parts = [p for p in target.split("/") if p] + parts
        else:
            resolved.append(part)
    return os.path.join(root, *resolved, *parts)


def describe_entry(root: str, path: str) -> str:
    """What ``path`` is in a layer or view: a file's content, or ``<kind …>`` for anything else."""
    full = _in_root(root, path)
    try:
        st = os.lstat(full)
    except FileNotFoundError:
        return "<absent>"
    if stat.S_ISREG(st.st_mode):
        return Path(full).read_text(errors="replace")
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0):
        return "<whiteout>"
    if stat.S_ISDIR(st.st_mode):
        try:
            opaque = os.getxattr(full, OPAQUE_XATTR, follow_symlinks=False) == b"y"
        except OSError:
            opaque = False
        names = sorted(os.listdir(full))
        return f"<{'opaque ' if opaque else ''}directory>" + "".join(f"\n{n}" for n in names)
    if stat.S_ISLNK(st.st_mode):
        return f"<symlink> {os.readlink(full)}"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
        return f"<{kind} {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}>"
    return "<fifo>" if stat.S_ISFIFO(st.st_mode) else "<socket>"


def read_layer_file(path: str, layer: str, variables: dict[str, str]) -> str:
    """The ``layer_file`` host fact: ``path`` in layer N (1 = lowest), ``upper``, or ``image``.

    ``image`` is what the next container of this image starts from: a fresh,
    read-only overlay of the image's layers alone, mounted for this one read.
    """
    if "lowerdirs" not in variables:
        raise LookupError("the scenario has no image: (layer_file needs one)")
    if layer == "upper":
        return describe_entry(variables["upperdir"], path)
    if layer == "image":
        view = Path(tempfile.mkdtemp(prefix="image-view-", dir=variables["bundle"]))
        try:
            lowers = [Path(p) for p in variables["lowerdirs"].split(":")]
            _mount("overlay", view, "overlay", 1, overlay_options(lowers))  # 1 = MS_RDONLY
            try:
                return describe_entry(str(view), path)
            finally:
                unmount_tree(view)
        finally:
            shutil.rmtree(view, ignore_errors=True)
    key = f"layer_{layer}"
    if key not in variables:
        count = sum(1 for k in variables if k.startswith("layer_"))
        raise LookupError(f"layer {layer}: the image has {count} layer(s), counted from 1 (the lowest)")
    return describe_entry(variables[key], path)
