"""Which runtime binary to run, with which global flags, and what it says of itself.

Per-runtime quirks live here and only here, and each one is written down as
an *adaptation* that the matrix prints in its host section, so a reader knows
exactly how each runtime was driven.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from conformance.model.errors import RuntimeNotFound
from conformance.model.records import RuntimeEntry

from . import cgroupfs

KNOWN = ("ref", "runc", "crun", "runsc")
DEFAULT_SPEC_VERSION = "1.0.2"


@dataclass
class RuntimeProfile:
    """How to invoke one runtime, and its identity for the matrix."""

    name: str                    # label in the matrix (basename for a path)
    path: str                    # the binary (or launcher) that runs
    command: list[str]           # the runtime's own argv prefix, up to, not including, the global flags
    global_flags: list[str] = field(default_factory=list)
    version: str = "unknown"
    spec_version: str = DEFAULT_SPEC_VERSION   # ociVersion written into config.json
    adaptations: list[str] = field(default_factory=list)
    #: what starts ``command`` in a place prepared for it (crun on a hybrid host: a private mount
    #: namespace); runs as the harness, so a lane that drops privileges does so after it
    launcher: list[str] = field(default_factory=list)
    #: ``run --keep`` leaves the stopped container for delete (runc): facts read after the exit
    #: need no create/start then
    run_keeps: bool = False

    def argv(self, root: Path, *verb: str) -> list[str]:
        return [*self.launcher, *self.command, "--root", str(root), *self.global_flags, *verb]

    def as_json(self) -> RuntimeEntry:
        return {"path": self.path, "version": self.version, "spec_version": self.spec_version,
                "global_flags": self.global_flags, "adaptations": self.adaptations}


def label(name: str) -> str:
    """A runtime's name in the matrix and in test ids: a known name as is, a path by its basename."""
    return name if name in KNOWN else Path(name).name


REF_ENV = "OCI_CONFORMANCE_REF"  # a path to the reference runtime's launcher, if set


def ref_launcher() -> str | None:
    """runtime_ref's own fast launcher (``bin/runtime-ref``: python3 -IS), found without importing it."""
    spec = importlib.util.find_spec("runtime_ref")
    if spec is None or not spec.origin:
        return None
    launcher = Path(spec.origin).parent / "bin" / "runtime-ref"
    return str(launcher) if launcher.is_file() else None


def _ref_command() -> tuple[str, list[str]]:
    """The reference runtime: $OCI_CONFORMANCE_REF, its fast launcher, a console script, or -m.

    The launcher skips ``site`` (~10 ms a call) and needs no installed
    package, so it also works in a qemu guest that sees this machine's files.
    """
    given = os.environ.get(REF_ENV)
    launcher = (given if given and os.access(given, os.X_OK) else None) or ref_launcher()
    if not launcher:
        beside = Path(sys.executable).with_name("runtime-ref")
        launcher = str(beside) if beside.is_file() else shutil.which("runtime-ref")
    if launcher:
        return launcher, [launcher]
    return f"{sys.executable} -m runtime_ref", [sys.executable, "-m", "runtime_ref"]


def _find(name: str) -> str:
    if os.sep in name:
        path = Path(name)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path.resolve())
        raise RuntimeNotFound(f"--runtime={name}: no executable file at that path")
    found = shutil.which(name)
    if not found:
        hint = " (install it: ci/setup.sh, or apt-get install " + name + ")" if name in KNOWN else ""
        raise RuntimeNotFound(
            f"--runtime={name}: not found on PATH{hint}; give ref, runc, crun, runsc or a path to a runc-compatible binary")
    return found


def _version(command: list[str]) -> tuple[str, str]:
    """(version, spec version) as printed by ``RUNTIME --version``."""
    try:
        out = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown", DEFAULT_SPEC_VERSION
    version = re.search(r"version\s+(\S+)", out)
    spec = re.search(r"^spec:\s*(\S+)", out, re.M)
    return (version.group(1) if version else out.strip().splitlines()[0] if out.strip() else "unknown",
            spec.group(1) if spec else DEFAULT_SPEC_VERSION)


def _has_run_flag(command: list[str], flag: str) -> bool:
    """Whether ``RUNTIME run --help`` lists ``flag`` (asked once per runtime and session): as an
    option (runc, ``   --keep``) or in a usage line (runtime-ref, ``[--keep]``)."""
    try:
        out = subprocess.run([*command, "run", "--help"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return re.search(rf"(^|[\s\[]){re.escape(flag)}\b", out.stdout + out.stderr, re.M) is not None


def _crun_on_hybrid(profile: RuntimeProfile) -> None:
    """crun 1.x refuses hybrid hosts whose cgroup2 mount exists beside v1.

    It works when started in a mount namespace of its own from which the
    cgroup2 mount is gone; the container inherits that namespace view.  Only
    that mount is made private there before it is detached, so nothing of it
    reaches the host; every other mount keeps the host's propagation, as if
    crun ran in the host's namespace (``--propagation private`` would cut the
    container off from the host's shared mounts: a mount the host makes later
    under an ``rslave`` bind would never reach it, one it makes under
    ``rshared`` never reach the host).
    """
    mount_map = cgroupfs.mounts()
    if cgroupfs.layout(mount_map) != "hybrid":
        return
    unified = str(mount_map[""])
    profile.launcher = ["unshare", "--mount", "--propagation", "unchanged", "--", *_detach_then_exec(unified)]
    profile.adaptations.append(
        f"hybrid cgroup host: crun runs in a private mount namespace without {unified} "
        "(crun refuses hybrid layouts)")


def _detach_then_exec(mountpoint: str) -> list[str]:
    """A shell that detaches ``mountpoint`` in its (new) mount namespace, then execs the runtime.

    The mount is made private first only when it is shared (the detach would reach its peers);
    with busybox (static, which the rootfs needs anyway) the ``umount`` starts without the
    dynamic loader.  The shell stays the system's: busybox's own would run its applets for the
    names it execs (its ``setpriv`` in the rootless lane, which lacks util-linux's options).
    """
    busybox = shutil.which("busybox")
    prefix = f"{busybox} " if busybox else ""
    private = f"{prefix}mount --make-private {mountpoint} && " if _is_shared(mountpoint) else ""
    return ["sh", "-c", f'{private}{prefix}umount -l {mountpoint} && exec "$0" "$@"']


def _is_shared(mountpoint: str) -> bool:
    """Whether the mount at ``mountpoint`` has peers (``shared:N`` in /proc/self/mountinfo); when
    unsure, True (the make-private is then made, as it always was)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return True
    for line in lines:
        fields = line.split(" - ")[0].split()
        if len(fields) > 4 and fields[4] == mountpoint:
            return any(f.startswith("shared:") for f in fields[6:])
    return True


def _runsc_flags(profile: RuntimeProfile) -> None:
    """gVisor: the ptrace platform and no host network, unless the user chose otherwise.

    ``--platform=ptrace`` works on any host.  The KVM platform is not chosen
    just because ``/dev/kvm`` exists: inside a VM without working nested
    virtualisation (this project's own CI machine) the sandbox then spins at
    100% CPU and ``create`` never returns.  Pass ``--runtime-flags
    runsc=--platform=kvm`` where KVM works.
    """
    if not any(f.startswith("--platform") for f in profile.global_flags):
        profile.global_flags.append("--platform=ptrace")
        profile.adaptations.append("runsc: --platform=ptrace (works without KVM; /dev/kvm is not trusted "
                                   "to work inside a VM)")
    if not any(f.startswith("--network") for f in profile.global_flags):
        profile.global_flags.append("--network=none")
        profile.adaptations.append("runsc: --network=none (the base spec has a new network namespace "
                                   "without a path; gVisor's own netstack would need a configured one)")


def resolve(name: str, extra_flags: list[str] | None = None) -> RuntimeProfile:
    """Turn a ``--runtime`` value into a profile; raises RuntimeNotFound with advice."""
    if name == "ref":
        path, command = _ref_command()
    else:
        path = _find(name)
        command = [path]
    version, spec = _version(command)
    profile = RuntimeProfile(name=label(name), path=path, command=command, global_flags=list(extra_flags or []),
                             version=version, spec_version=spec)
    profile.run_keeps = _has_run_flag(command, "--keep")
    base = Path(path).name
    if base == "crun":
        _crun_on_hybrid(profile)
    elif base == "runsc":
        _runsc_flags(profile)
    return profile
