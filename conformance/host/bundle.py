"""An OCI bundle on disk: config.json (base spec + scenario patch) and a rootfs.

The bundle's variables fill the scenario's placeholders (``{{rootfs}}``,
``{{id}}``, what the host setup and the image made: model/placeholders.py).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from conformance.model.placeholders import fill

from ..model.scenario import Scenario
from .base_spec import base_spec
from .image import ImageMount, Snapshotter, mount_image
from .patch import patch_into
from .rootfs import busybox_rootfs, release_rootfs, take_rootfs


@dataclass(frozen=True)
class LaneNeeds:
    """What a lane needs of the bundles written for it, beyond the scenario's config.

    ``adapt`` is the lane's one place to change the config (the rootless lane:
    rootless_config.py); it may raise to say the scenario cannot exist in the
    lane.  ``owner`` (uid, gid) owns the bundle directory, the rootfs copy and
    the host setup's canaries, so a runtime that runs as that user can write
    where a runtime writes.  ``refuses``: scenario requirements (``requires``)
    the lane never meets, each with why: such a scenario is skipped.
    ``no_cgroup``: why a container of this lane gets no cgroup of its own
    (rootless where nothing is delegated), or None.  ``probe_must_run``: a
    runtime whose probe container did not run cannot work in this lane at all
    (runsc refuses ``create`` rootless): its cells are errors with that
    message, so no scenario passes on a refusal that was never about it.
    """

    adapt: Callable[[dict[str, Any]], None] | None = None
    owner: tuple[int, int] | None = None
    refuses: Mapping[str, str] = field(default_factory=dict)
    no_cgroup: str | None = None
    probe_must_run: bool = False

    def unmet(self, requires: Iterable[str]) -> str | None:
        """Why the lane cannot run a scenario with these requirements, or None."""
        return next((f"lane lacks {name}: {self.refuses[name]}" for name in requires if name in self.refuses), None)

    def unplaceable_limits(self, config: dict[str, Any]) -> list[str]:
        """The ``linux.resources`` a runtime of this lane may refuse for want of a cgroup (none where the
        container has one): a refused create must then be told from the entrypoint's exit (create/start)."""
        if not self.no_cgroup:
            return []
        return sorted(k for k, v in ((config.get("linux") or {}).get("resources") or {}).items()
                      if v and k != "devices")

    def excused(self, config: dict[str, Any], refusal: str | None) -> str | None:
        """A create refused for limits the lane gives no cgroup to hold, said as a skip; else None.

        The spec lets a runtime refuse limits it cannot apply ("MUST ... or fail"): in a lane without
        a cgroup for the container (``no_cgroup``) that refusal is the runtime's right, not an error
        of its set-up; the cell says so with the runtime's own message.  Running without the limits
        instead stays a ``fail`` with the evidence.
        """
        limits = self.unplaceable_limits(config)
        if not (limits and refusal and _LIMIT_REFUSAL.search(refusal)):
            return None  # e.g. runsc --rootless refuses create itself: that stays an error
        return (f"refused the limits ({', '.join(limits)}) it has no cgroup to hold ({self.no_cgroup}): "
                f"{refusal[-400:]}")


#: what a runtime's refusal of limits says (runc: "cannot set memory limit: container could not join or
#: create cgroup"; runtime-ref: "cannot set linux.resources.memory ... no cgroup of its own")
_LIMIT_REFUSAL = re.compile(r"cgroup|limit|resources", re.I)

#: the bare lane: the config as the scenario writes it, everything owned by the harness
AS_WRITTEN = LaneNeeds()


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
    config: dict[str, Any] = patch_into(base, fill(scenario.patch, variables))  # base is this bundle's own copy
    config.setdefault("linux", {})
    return config


def root_host_ids(config: dict[str, Any]) -> dict[str, str]:
    """``{{root_host_uid}}``/``{{root_host_gid}}``: the host ids of container root under the config's
    maps (0 without a user namespace; empty when root is not mapped), for host-side checks that
    follow the configured map rather than a number (a rootless lane moves the maps)."""
    linux = config.get("linux") or {}
    userns = any(ns.get("type") == "user" for ns in linux.get("namespaces") or [])
    out = {}
    for kind in ("uid", "gid"):
        maps = linux.get(f"{kind}Mappings") or []
        host = 0 if not userns or not maps else next(
            (int(m["hostID"]) for m in maps if int(m["containerID"]) == 0), None)
        out[f"root_host_{kind}"] = "" if host is None else str(host)
    return out


def named_host_ids(config: dict[str, Any]) -> dict[str, str]:
    """``{{host_uid_N}}``/``{{host_gid_N}}``: the host id of container id N under the config's maps,
    for N the start of each map and each id of ``process.user`` (N itself without a user namespace;
    empty when N is not mapped), so a scenario with maps of its own can name where each id went."""
    linux = config.get("linux") or {}
    userns = any(ns.get("type") == "user" for ns in linux.get("namespaces") or [])
    user = (config.get("process") or {}).get("user") or {}
    named = {"uid": {int(user.get("uid", 0))},
             "gid": {int(user.get("gid", 0)), *map(int, user.get("additionalGids") or [])}}
    out = {}
    for kind in ("uid", "gid"):
        maps = linux.get(f"{kind}Mappings") or []
        for n in named[kind] | {int(m["containerID"]) for m in maps}:
            host = n if not userns or not maps else next(
                (int(m["hostID"]) + n - int(m["containerID"]) for m in maps
                 if int(m["containerID"]) <= n < int(m["containerID"]) + int(m["size"])), None)
            out[f"host_{kind}_{n}"] = "" if host is None else str(host)
    return out


def _name_cgroups_path(bundle: Bundle) -> None:
    """``{{cgroups_path}}``: the config's cgroupsPath ("" when the patch leaves it to the runtime),
    where a ``cgroup: absent`` step looks."""
    bundle.variables["cgroups_path"] = str(bundle.config["linux"].get("cgroupsPath") or "")


def build(scenario: Scenario, cid: str, workdir: Path, oci_version: str,
          variables: dict[str, str], lane: LaneNeeds = AS_WRITTEN, images: Snapshotter | None = None) -> Bundle:
    """Write a bundle for one container under ``workdir/cid`` (``lane``: what the runtime's lane
    changes and who owns the bundle; nothing is left behind when it raises); a scenario's image is
    unpacked and mounted by ``images`` (the lane's snapshotter), or by the harness itself (image.py)."""
    if scenario.image is not None:
        return _build_on_image(scenario, cid, workdir, oci_version, variables, lane, images)
    path = workdir / cid
    path.mkdir(parents=True)
    variables = {**variables, "bundle": str(path), "rootfs": str(path / "rootfs"), "id": cid}
    bundle = Bundle(path, make_config(scenario, cid, oci_version, variables), variables)
    try:
        _for_lane(bundle, lane)
        _name_cgroups_path(bundle)
        take_rootfs(busybox_rootfs(), bundle.rootfs, workdir, lane.owner)
        (path / "config.json").write_text(json.dumps(bundle.config))
    except BaseException:
        bundle.remove()
        raise
    return bundle


def _build_on_image(scenario: Scenario, cid: str, workdir: Path, oci_version: str,
                    variables: dict[str, str], lane: LaneNeeds, images: Snapshotter | None) -> Bundle:
    """The bundle with the scenario's image mounted as its rootfs (an overlay, see image.py).

    The image's placeholders ({{upperdir}}, {{layer_1}} …) join the variables, and
    anything that fails after the mount unmounts it again: Ctrl-C included.
    """
    assert scenario.image is not None
    path = workdir / cid
    path.mkdir(parents=True)
    bundle = Bundle(path, {"root": {"path": "rootfs"}})
    try:
        if images is not None:  # an engine's snapshotter (no lane has both it and a rootless owner)
            bundle.image = images.mount(scenario.image, path, path / "rootfs")
        else:
            bundle.image = mount_image(scenario.image, path, path / "rootfs", lane.owner)
        bundle.variables = {**variables, "bundle": str(path), "rootfs": str(bundle.image.target), "id": cid,
                            **bundle.image.variables()}
        bundle.config = make_config(scenario, cid, oci_version, bundle.variables)
        _for_lane(bundle, lane)
        _name_cgroups_path(bundle)
        (path / "config.json").write_text(json.dumps(bundle.config))
    except BaseException:
        bundle.remove()
        raise
    return bundle


def _for_lane(bundle: Bundle, lane: LaneNeeds) -> None:
    """The lane's changes to the config, the ids container root has on the host, the bundle's owner."""
    if lane.adapt is not None:
        lane.adapt(bundle.config)
    bundle.variables.update(root_host_ids(bundle.config))
    bundle.variables.update(named_host_ids(bundle.config))
    if lane.no_cgroup and not bundle.config["linux"].get("cgroupsPath"):
        bundle.variables["no_cgroup"] = lane.no_cgroup  # a ``cgroup:`` step has nothing to look at
    if lane.owner is not None:
        os.chown(bundle.path, *lane.owner)
