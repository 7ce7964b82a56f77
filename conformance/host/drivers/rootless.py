"""The rootless lane: ``NAME:rootless`` is NAME's own CLI run by an unprivileged user.

The harness stays root where it observes (``/proc``, cgroup files, the
bundle's output files); every process of the runtime runs as a user made for
this driver (rootless_user.py: its own uid and gid, subordinate ranges, a
state root it owns — this driver's ``root`` is that user's home):

    [launcher (root)] [enter the delegated cgroup (root)] setpriv --reuid U --regid G
        --clear-groups --reset-env RUNTIME --root R [flags] VERB …

Everything else is the bare lane's (``CliDriver``: subreaper, pid file,
forced delete, strays).  What differs is written in three places and listed
in the matrix as adaptations: the config (rootless_config.py, the one place
that changes it), the cgroup (rootless_cgroup.py: a delegated v2 subtree, or
none), and the runtime quirks of this lane (``_LANE_FLAGS``: runsc needs
``--rootless``).  A host that lets no unprivileged user make a user
namespace makes every cell of the lane a skip, with the host's reason.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path
from typing import Any

from conformance.model.errors import NotApplicable
from conformance.model.records import RuntimeEntry

from .. import rootless_cgroup, rootless_config, rootless_user
from ..bundle import LaneNeeds
from ..runtimes import RuntimeProfile
from .cli import CliDriver

#: ``--rootless-user NAME``: run as this existing user instead of one made for the session
USER_ENV = rootless_user.USER_ENV

#: runtime (basename) -> (global flags, why), for what a runtime needs to run rootless at all
_LANE_FLAGS: dict[str, tuple[list[str], str]] = {
    "runsc": (["--rootless"], "runsc: --rootless (it re-runs itself as root of a user namespace that maps "
                              "the user, and makes the container's user namespace itself)"),
}
#: runtimes that make the container's user namespace themselves: the config gets none added
_MAKES_USERNS = frozenset({"runsc"})

LANE_NOTES = (
    "runs as an unprivileged user made for the session (useradd: its own uid and gid, subordinate "
    "ranges for newuidmap/newgidmap), via setpriv --reuid --regid --clear-groups --reset-env; its "
    "--root and the bundles (rootfs copies, image layers) are that user's",
)


class RootlessDriver(CliDriver):
    """One runtime's CLI, run as an unprivileged user that owns its state root and bundles."""

    lane = "rootless"
    spelling = "{}:rootless"

    def __init__(self, profile: RuntimeProfile, root: Path) -> None:
        super().__init__(_rootless_profile(profile), root)
        self.user = _user_for(root)
        self.delegation: rootless_cgroup.Delegation | None = None
        try:
            self.delegation = rootless_cgroup.delegate(_subtree_name(self.user), self.user.uid, self.user.gid)
            _check_userns(self.user)
        except BaseException:
            self._remove_user()
            raise
        self._target = rootless_config.RootlessTarget(self.user, self.delegation, _makes_userns(self.profile))
        no_cgroup = None if self.delegation is not None else rootless_cgroup.NOT_DELEGATED
        self._needs = LaneNeeds(adapt=self._adapt, owner=(self.user.uid, self.user.gid),
                                refuses={**rootless_config.REFUSED,
                                         **({"own-cgroup": no_cgroup} if no_cgroup else {})},
                                no_cgroup=no_cgroup, probe_must_run=True)

    # -- identity ----------------------------------------------------------------
    @classmethod
    def describe(cls, profile: RuntimeProfile) -> RuntimeEntry:
        entry = _rootless_profile(profile).as_json()
        entry["lane"], entry["rootless"] = cls.lane, True
        entry["adaptations"] = _adaptations(_rootless_profile(profile))
        return entry

    @property
    def adaptations(self) -> list[str]:
        return _adaptations(self.profile)

    @property
    def bundle_needs(self) -> LaneNeeds:
        """The config the user runs (rootless_config.adapt), in bundles the user owns; no scenario
        that needs the host's user namespace."""
        return self._needs

    def _adapt(self, config: dict[str, Any]) -> None:
        rootless_config.adapt(config, self._target)

    # -- plumbing ------------------------------------------------------------------
    def _argv(self, *verb: str) -> list[str]:
        """Root's launcher and cgroup entry first, then the drop to the user, then the runtime."""
        enter = self.delegation.enter() if self.delegation is not None else []
        return [*self.profile.launcher, *enter, *self.user.as_user(), *self.profile.command,
                "--root", str(self.root), *self.profile.global_flags, *verb]

    def remove_containers(self) -> list[str]:
        """The bare lane's removal as the user, then the cgroup subtree, the user (its processes
        killed) and its home: what both ``cleanup`` and a closing session call."""
        left: list[str] = []
        try:
            left = super().remove_containers()
        finally:
            left += self._remove_user()
        return left

    def _remove_user(self) -> list[str]:
        left = rootless_cgroup.undelegate(self.delegation) if self.delegation is not None else []
        self.delegation = None
        return left + rootless_user.remove(self.user)


def _rootless_profile(profile: RuntimeProfile) -> RuntimeProfile:
    """The profile with the flags the runtime needs to run rootless (a copy: the bare lane's stays)."""
    flags, why = _LANE_FLAGS.get(Path(profile.path).name, ([], ""))
    missing = [f for f in flags if f not in profile.global_flags]
    return dataclasses.replace(profile, global_flags=[*profile.global_flags, *missing],
                               adaptations=[*profile.adaptations, *([why] if missing else [])])


def _adaptations(profile: RuntimeProfile) -> list[str]:
    notes = [*profile.adaptations, *LANE_NOTES]
    if profile.launcher:
        notes.append("the launcher above runs as root, before the drop to the user: an unprivileged user "
                     "cannot make a mount namespace without a user namespace")
    notes.append(f"cgroups: {rootless_cgroup.plan()}")
    notes += [f"config: {text}" for text in rootless_config.rules_for(_makes_userns(profile),
                                                                        rootless_cgroup.delegates())]
    return notes


def _makes_userns(profile: RuntimeProfile) -> bool:
    return Path(profile.path).name in _MAKES_USERNS


def _user_for(root: Path) -> rootless_user.RootlessUser:
    named = os.environ.get(USER_ENV)
    if named:
        return rootless_user.named(named, root)
    return rootless_user.make(root, os.environ.get("OCI_CONFORMANCE_TAG", ""))


def _subtree_name(user: rootless_user.RootlessUser) -> str:
    """The delegated cgroup's name: the user's own when made here (a sweep finds it by that name)."""
    return user.name if user.made else f"{rootless_user.NAME_PREFIX}{os.getpid()}-{user.name}"


class UsernsUnavailable(NotApplicable):
    """The host lets no unprivileged user make a user namespace: the whole lane skips here."""


#: run as the user: succeeds where an unprivileged user may make a user namespace
USERNS_PROBE = ["unshare", "--user", "--map-root-user", "true"]
USERNS_SYSCTLS = ("/proc/sys/kernel/unprivileged_userns_clone", "/proc/sys/user/max_user_namespaces",
                  "/proc/sys/kernel/apparmor_restrict_unprivileged_userns")


def _check_userns(user: rootless_user.RootlessUser) -> None:
    """Can ``user`` make a user namespace here?  If not: UsernsUnavailable with the host's reason."""
    done = subprocess.run([*user.as_user(), *USERNS_PROBE], capture_output=True, text=True, timeout=30)
    if done.returncode == 0:
        return
    settings = []
    for path in USERNS_SYSCTLS:
        try:
            settings.append(f"{path[len('/proc/sys/'):].replace('/', '.')} = {Path(path).read_text().strip()}")
        except OSError:
            pass
    raise UsernsUnavailable(f"the host lets no unprivileged user make a user namespace "
                            f"({' '.join(USERNS_PROBE)} as {user.name}: {(done.stderr or done.stdout).strip()}; "
                            f"{', '.join(settings) or 'no userns sysctl found'})")
