"""An OCI bundle on disk: config.json (base spec + scenario patch) and a rootfs.

The bundle's variables fill the scenario's placeholders (``{{rootfs}}``,
``{{id}}``, what the host setup and the image made: model/placeholders.py).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.model.placeholders import fill

from ..model.scenario import Scenario
from .base_spec import base_spec
from .image import ImageMount, Snapshotter, mount_image
from .patch import apply_patch
from .rootfs import busybox_rootfs, release_rootfs, take_rootfs


@dataclass
class Bundle:
    """A bundle directory and what went into it."""

    path: Path
    config: dict[str, Any]
    variables: dict[str, str] = field(default_factory=dict)
    #: the overlay of the scenario's image mounted at the rootfs (None: a plain busybox copy)
    image: ImageMount | None = None

    @property
    def rootfs(self) -> Path:
        return self.path / str(self.config["root"]["path"])

    def remove(self) -> None:
        if self.image is not None:  # first: rmtree must never walk into a mounted overlay
            self.image.unmount()
        release_rootfs(self.rootfs, self.path.parent)  # a copy that came back untouched is reused
        shutil.rmtree(self.path, ignore_errors=True)


def make_config(scenario: Scenario, cid: str, oci_version: str, variables: dict[str, str]) -> dict[str, Any]:
    """The scenario's config.json: base with the per-container fields (the container's
    cgroupsPath, /<id>, so the harness finds what a run leaves; the ociVersion the runtime
    accepts; the entrypoint), then the patch, which may change any of them (``linux:
    {cgroupsPath: null}`` leaves the choice to the runtime; a scenario about refused configs
    sets an ociVersion or process.args no runtime may take)."""
    base = base_spec()
    base["linux"]["cgroupsPath"] = f"/{cid}"
    base["ociVersion"] = oci_version
    base["process"]["args"] = list(fill(scenario.args, variables))
    config: dict[str, Any] = apply_patch(base, fill(scenario.patch, variables))
    config.setdefault("linux", {})
    return config


def _name_cgroups_path(bundle: Bundle) -> None:
    """``{{cgroups_path}}``: the config's cgroupsPath ("" when the patch leaves it to the runtime),
    where a ``cgroup: absent`` step looks."""
    bundle.variables["cgroups_path"] = str(bundle.config["linux"].get("cgroupsPath") or "")


def build(scenario: Scenario, cid: str, workdir: Path, oci_version: str,
          variables: dict[str, str], images: Snapshotter | None = None) -> Bundle:
    """Write a bundle for one container under ``workdir/cid``; a scenario's image is unpacked and
    mounted by ``images`` (the lane's snapshotter), or by the harness itself (image.py)."""
    if scenario.image is not None:
        return _build_on_image(scenario, cid, workdir, oci_version, variables, images)
    path = workdir / cid
    path.mkdir(parents=True)
    variables = {**variables, "bundle": str(path), "rootfs": str(path / "rootfs"), "id": cid}
    bundle = Bundle(path, make_config(scenario, cid, oci_version, variables), variables)
    _name_cgroups_path(bundle)
    take_rootfs(busybox_rootfs(), bundle.rootfs, workdir)
    (path / "config.json").write_text(json.dumps(bundle.config))
    return bundle


def _build_on_image(scenario: Scenario, cid: str, workdir: Path, oci_version: str,
                    variables: dict[str, str], images: Snapshotter | None) -> Bundle:
    """The bundle with the scenario's image mounted as its rootfs (an overlay, see image.py).

    The image's placeholders ({{upperdir}}, {{layer_1}} …) join the variables, and
    anything that fails after the mount unmounts it again: Ctrl-C included.
    """
    assert scenario.image is not None
    path = workdir / cid
    path.mkdir(parents=True)
    bundle = Bundle(path, {"root": {"path": "rootfs"}})
    try:
        mount = images.mount if images is not None else mount_image
        bundle.image = mount(scenario.image, path, path / "rootfs")
        bundle.variables = {**variables, "bundle": str(path), "rootfs": str(bundle.image.target), "id": cid,
                            **bundle.image.variables()}
        bundle.config = make_config(scenario, cid, oci_version, bundle.variables)
        _name_cgroups_path(bundle)
        (path / "config.json").write_text(json.dumps(bundle.config))
    except BaseException:
        bundle.remove()
        raise
    return bundle
