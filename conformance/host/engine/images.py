"""A scenario's image through containerd's own importer, unpacker and overlayfs snapshotter.

On the bare lane the harness plays the snapshotter (image.py unpacks each
layer as containerd would and mounts the overlay itself).  On the engine
lane containerd does it: the image is written as what a registry would have
served — an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``:
the busybox base and the scenario's layers as uncompressed layer tarballs
with their ``.wh.`` and ``.wh..wh..opq`` entries, a config naming their diff
ids, a manifest) — and handed to ``ctr images import``, which stores the
blobs and unpacks every layer into a snapshot of the overlayfs snapshotter
(its own whiteout and opaque-directory handling).  Per container a snapshot
is prepared on the top layer's chain id (``Snapshots.Prepare``: an active
snapshot with an upper dir of its own) and its mounts become the task's
rootfs, mounted by the shim.  The layers' host paths, read from those
mounts, fill the scenario's ``{{layer_N}}``, ``{{upperdir}}`` … as on the
bare lane, so the same facts are read from containerd's snapshots.

An image is imported once per daemon (keyed by its manifest digest); a
prepared snapshot is a GC root (``containerd.io/gc.root``) until the bundle
is removed, when it is removed with it.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

from conformance.model.errors import DriverError
from conformance.model.image_spec import ImageSpec

from ..image import ImageMount
from ..rootfs import busybox_rootfs
from . import api
from .wire import RpcError

SNAPSHOTTER = "overlayfs"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
#: what the shim finds in a bundle of this lane: the snapshot that is its rootfs (drivers/containerd.py)
SNAPSHOT_FILE = "containerd-snapshot.json"
IMPORT_TIMEOUT_S = 120.0

_BASE_LAYER: dict[Path, bytes] = {}  # the busybox rootfs as a layer tarball, per rootfs dir


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def base_layer() -> bytes:
    """The busybox rootfs the bare lane uses, as one deterministic layer tarball (built once per process)."""
    root = busybox_rootfs()
    if root not in _BASE_LAYER:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(root.rglob("*")):
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
                info.mtime, info.uname, info.gname = 0, "", ""
                with open(path, "rb") if info.isreg() else io.BytesIO() as data:
                    tar.addfile(info, data if info.isreg() else None)
        _BASE_LAYER[root] = buf.getvalue()
    return _BASE_LAYER[root]


def chain_ids(diff_ids: List[str]) -> List[str]:
    """The OCI chain id of each layer (image-spec config.md): the snapshot key containerd unpacks it to."""
    chain: List[str] = []
    for diff in diff_ids:
        chain.append(diff if not chain else _sha256(f"{chain[-1]} {diff}".encode()))
    return chain


@dataclass
class Layout:
    """An image as an OCI image layout in one tar stream, and what containerd will call it."""

    archive: bytes
    name: str
    manifest_digest: str
    diff_ids: List[str]


def layout(spec: ImageSpec) -> Layout:
    """The busybox base and the scenario's layers (lowest first) as an OCI image layout tar stream."""
    layers = [base_layer(), *(layer.tar() for layer in spec.layers)]
    diff_ids = [_sha256(t) for t in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}, sort_keys=True).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                           "config": {"mediaType": CONFIG_TYPE, "digest": _sha256(config), "size": len(config)},
                           "layers": [{"mediaType": LAYER_TYPE, "digest": d, "size": len(t)}
                                      for d, t in zip(diff_ids, layers)]}, sort_keys=True).encode()
    digest = _sha256(manifest)
    name = f"oci-conformance.local/scenario-image:{digest[7:19]}"
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": MANIFEST_TYPE, "digest": digest, "size": len(manifest),
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}}]}).encode()
    blobs = {d: t for d, t in zip(diff_ids, layers)}
    blobs.update({_sha256(config): config, digest: manifest})
    files = [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'), ("index.json", index)]
    files += [(f"blobs/sha256/{d[7:]}", data) for d, data in sorted(blobs.items())]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name_in_tar, data in files:
            info = tarfile.TarInfo(name_in_tar)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return Layout(buf.getvalue(), name, digest, diff_ids)


class SnapshotMount(ImageMount):
    """A container's rootfs as a prepared snapshot of containerd's overlayfs snapshotter.

    ``target`` is where the shim mounts it (its bundle's rootfs); removing the
    bundle removes the snapshot (the shim unmounted it when the task went).
    """

    def __init__(self, target: Path, upper: Path, work: Path, base: Path, layers: List[Path],
                 release: Any, notes: Dict[str, str]) -> None:
        super().__init__(target, upper, work, base, layers)
        self._release, self.notes = release, notes

    def variables(self) -> dict[str, str]:
        return {**super().variables(), **self.notes}

    def unmount(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


def _mount_paths(mount: api.Mount) -> Tuple[List[Path], Path, Path]:
    """(lowerdirs top first, upperdir, workdir) of an overlay mount's options."""
    options = dict(o.partition("=")[::2] for o in mount.options if "=" in o)
    if mount.type != "overlay" or "upperdir" not in options:
        raise DriverError(f"containerd's {SNAPSHOTTER} snapshotter gave a {mount.type} mount "
                          f"({', '.join(mount.options)}), not an overlay with an upper dir")
    return [Path(p) for p in options["lowerdir"].split(":")], Path(options["upperdir"]), Path(options["workdir"])


class Images:
    """One daemon's images (imported once each) and the snapshots prepared on them, for one namespace."""

    def __init__(self, client: api.Client, ctr: List[str], shim_bundles: Path) -> None:
        self.client, self.ctr, self.shim_bundles = client, ctr, shim_bundles
        self.imported: dict[str, Layout] = {}

    def _import(self, image: Layout) -> None:
        if image.manifest_digest in self.imported:
            return
        done = subprocess.run([*self.ctr, "images", "import", "--snapshotter", SNAPSHOTTER, "-"],
                              input=image.archive, capture_output=True, timeout=IMPORT_TIMEOUT_S)
        if done.returncode != 0:
            said = (done.stderr or done.stdout).decode(errors="replace").strip()
            raise DriverError(f"ctr images import of {image.name} failed (exit {done.returncode}): {said[-400:]}")
        try:
            target = self.client.image_target(image.name)
        except RpcError as exc:
            raise DriverError(f"ctr images import said nothing, but containerd has no {image.name}: {exc}") from None
        if target != image.manifest_digest:
            raise DriverError(f"containerd's {image.name} is {target}, not the manifest imported "
                              f"({image.manifest_digest})")
        self.imported[image.manifest_digest] = image

    def mount(self, spec: ImageSpec, bundle_dir: Path, target: Path) -> ImageMount:
        """Import the image (once), prepare this container's snapshot, and say where its layers are."""
        image = layout(spec)
        started = time.monotonic()
        self._import(image)
        key = f"{bundle_dir.name}-rootfs"
        parent = chain_ids(image.diff_ids)[-1]
        try:
            mounts = self.client.prepare(SNAPSHOTTER, key, parent, {"containerd.io/gc.root": _now()})
        except RpcError as exc:
            raise DriverError(f"containerd could not prepare a snapshot on {parent} ({image.name}): {exc}") from None
        try:
            lowers, upper, work = _mount_paths(mounts[0]) if mounts else _mount_paths(api.Mount("none", "", []))
        except BaseException:
            self._remove(key)
            raise
        target.mkdir(mode=0o755)  # the bundle's own rootfs stays empty: the shim mounts the snapshot in its bundle
        (bundle_dir / SNAPSHOT_FILE).write_text(json.dumps({
            "key": key, "image": image.name, "digest": image.manifest_digest, "snapshotter": SNAPSHOTTER,
            "mounts": [{"type": m.type, "source": m.source, "options": m.options} for m in mounts]}))
        layers = list(reversed(lowers))  # lowest first: the busybox base, then the scenario's layer 1 …
        notes = {"snapshotter": f"containerd {SNAPSHOTTER}", "image_digest": image.manifest_digest,
                 "image_name": image.name, "snapshot": key,
                 "image_import_s": f"{time.monotonic() - started:.3f}"}
        return SnapshotMount(self.shim_bundles / bundle_dir.name / "rootfs", upper, work, layers[0], layers[1:],
                             lambda: self._remove(key), notes)

    def _remove(self, key: str) -> None:
        try:
            self.client.remove_snapshot(SNAPSHOTTER, key)
        except (RpcError, OSError):
            pass


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def snapshot_of(bundle: Path) -> Dict[str, Any] | None:
    """What engine/images.py wrote into a bundle whose rootfs is a snapshot, or None."""
    path = bundle / SNAPSHOT_FILE
    if not os.path.exists(path):
        return None
    saved: Dict[str, Any] = json.loads(path.read_text())
    return saved
