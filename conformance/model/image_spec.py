"""A scenario's layered image, as data: layers of files, whiteouts and opaque directories.

Each layer is a change set that can be written as an OCI layer tarball (a
removal is an empty ``.wh.NAME`` entry, "hide everything below" an empty
``.wh..wh..opq`` entry), byte-for-byte reproducible so that its sha256 is its
content address.  Unpacking and mounting it is the host's business
(``conformance/host/image.py``).  Standard library only.
"""
from __future__ import annotations

import io
import posixpath
import tarfile
from dataclasses import dataclass
from typing import Any

from .errors import ConformanceError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


class ImageError(ConformanceError):
    """An image description that cannot be a layer tarball; ``layer`` is its index in ``layers``."""

    layer: int | None = None


@dataclass(frozen=True)
class Entry:
    """One file, directory or symlink a layer adds (or replaces)."""

    path: str                 # absolute, normalised
    kind: str                 # file | dir | symlink
    content: bytes = b""      # a file's bytes
    target: str = ""          # a symlink's target
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Layer:
    """One change set: what it adds, what it removes, which directories it makes opaque."""

    entries: tuple[Entry, ...] = ()
    whiteouts: tuple[str, ...] = ()
    opaque: tuple[str, ...] = ()

    @classmethod
    def from_yaml(cls, raw: dict[str, Any]) -> "Layer":
        entries = []
        for path, spec in (raw.get("files") or {}).items():
            spec = {"content": spec} if isinstance(spec, str) else spec
            entries.append(Entry(_clean(path), "file", spec.get("content", "").encode(),
                                 mode=_mode(spec.get("mode"), 0o644), uid=spec.get("uid", 0),
                                 gid=spec.get("gid", 0)))
        for item in raw.get("dirs") or ():
            spec = {"path": item} if isinstance(item, str) else item
            entries.append(Entry(_clean(spec["path"]), "dir", mode=_mode(spec.get("mode"), 0o755),
                                 uid=spec.get("uid", 0), gid=spec.get("gid", 0)))
        for path, target in (raw.get("symlinks") or {}).items():
            entries.append(Entry(_clean(path), "symlink", target=target, mode=0o777))
        layer = cls(tuple(entries), tuple(_clean(p) for p in raw.get("whiteouts") or ()),
                    tuple(_clean(p) for p in raw.get("opaque") or ()))
        layer._check()
        return layer

    def _check(self) -> None:
        added = [e.path for e in self.entries]
        dup = {p for p in added if added.count(p) > 1}
        if dup:
            raise ImageError(f"a layer names {sorted(dup)[0]} twice")
        both = set(added) & set(self.whiteouts)
        if both:  # one tar may not hold NAME and .wh.NAME (image-spec layer.md#whiteouts)
            raise ImageError(f"a layer both adds and whites out {sorted(both)[0]}: use two layers")
        files = {e.path for e in self.entries if e.kind != "dir"}
        for d in self.opaque:
            if d in files:
                raise ImageError(f"{d} is made opaque but the same layer adds it as a file")

    def tar(self) -> bytes:
        """This layer as an OCI layer tarball (uncompressed), byte-for-byte reproducible."""
        members: dict[str, tarfile.TarInfo] = {}
        data: dict[str, bytes] = {}

        def add(path: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0, payload: bytes = b"",
                linkname: str = "") -> None:
            for parent in _parents(path):
                if parent not in members:
                    add(parent, tarfile.DIRTYPE, 0o755)
            info = tarfile.TarInfo(path.lstrip("/") + ("/" if kind == tarfile.DIRTYPE else ""))
            info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, 0
            info.size, info.linkname = len(payload), linkname
            members[path] = info
            data[path] = payload

        for e in sorted(self.entries, key=lambda e: e.path.split("/")):
            kind = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}[e.kind]
            add(e.path, kind, e.mode, e.uid, e.gid, e.content, e.target)
        for path in self.whiteouts:
            parent, name = posixpath.split(path)
            add(posixpath.join(parent, WHITEOUT_PREFIX + name), tarfile.REGTYPE, 0o644)
        for path in self.opaque:
            if path not in members:
                add(path, tarfile.DIRTYPE, 0o755)
            add(posixpath.join(path, OPAQUE_MARKER), tarfile.REGTYPE, 0o644)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for path in sorted(members, key=lambda p: p.split("/")):  # parents before children
                tf.addfile(members[path], io.BytesIO(data[path]) if data[path] else None)
        return buf.getvalue()


@dataclass(frozen=True)
class ImageSpec:
    """A scenario's image: layers from bottom to top, over the busybox base."""

    layers: tuple[Layer, ...]

    @classmethod
    def from_yaml(cls, raw: dict[str, Any]) -> "ImageSpec":
        layers = []
        for index, layer in enumerate(raw["layers"]):
            try:
                layers.append(Layer.from_yaml(layer))
            except ImageError as exc:
                exc.layer = index
                raise
        return cls(tuple(layers))


def _clean(path: str) -> str:
    norm = posixpath.normpath(path)
    if not path.startswith("/") or norm != path or ".." in path.split("/") or path == "/":
        raise ImageError(f"image path {path!r} must be absolute and normalised (no //, . or ..)")
    if any(part.startswith(WHITEOUT_PREFIX) for part in path.split("/")):
        raise ImageError(f"image path {path!r}: names starting with {WHITEOUT_PREFIX} are whiteouts; "
                         "use whiteouts: or opaque:")
    return path


def _mode(value: Any, default: int) -> int:
    if value is None:
        return default
    return int(value, 8) if isinstance(value, str) else int(value)


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
