"""Per-process state of a conformance run: work dirs, runtime drivers, results.

One instance lives in ``config.stash`` of each pytest process (the controller
and every xdist worker).  It owns everything the run makes on the host — the
bundle work dir and each runtime's private state root — and ``close()``
removes all of it, after a failure, a timeout or Ctrl-C as after success.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from conformance.model.errors import ConformanceError, NotApplicable, RuntimeNotFound
from conformance.model.records import SandboxProbe

from . import ahead, bridge_net, cgroupfs, drivers, host_setup, idle, proctable, sandbox
from .drivers import RuntimeDriver
from .drivers.cli import CliDriver, kill_naming
from .drivers.procs import reap_adopted
from .image import unmount_tree
from .runtimes import RuntimeProfile, resolve

STATE_BASE = Path("/run")
#: where a session's work dir goes when ``OCI_CONFORMANCE_WORKDIR`` does not say (see work_base)
SHM = Path("/dev/shm")
#: the room /dev/shm must have free to be chosen (a container engine's default /dev/shm is 64 MiB:
#: bundles of two workers, their rootfs copies and spares, and what containers write would not fit)
SHM_MIN_FREE = 512 * 2**20


def work_base() -> Path:
    """The directory under which a session makes its work dir (bundles, rootfs copies, logs).

    ``$OCI_CONFORMANCE_WORKDIR`` when set; else ``/dev/shm`` when it is a memory
    file system this process may write with SHM_MIN_FREE free (every scenario
    makes and removes a bundle there: on this project's VM ``/tmp`` is ext4 with
    online discard, where those creations and removals cost the harness ~1 ms
    per cell and the runtimes as much again); else ``$TMPDIR`` (tempfile.gettempdir()).
    """
    chosen = os.environ.get("OCI_CONFORMANCE_WORKDIR")
    if chosen:
        return Path(chosen)
    if _is_tmpfs(SHM) and os.access(SHM, os.W_OK | os.X_OK) and _free(SHM) >= SHM_MIN_FREE:
        return SHM
    return Path(tempfile.gettempdir())


def _free(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _is_tmpfs(path: Path) -> bool:
    try:
        with open("/proc/self/mounts") as mounts:
            return any(f[1] == str(path) and f[2] == "tmpfs" for f in (line.split() for line in mounts))
    except OSError:
        return False


def work_bases() -> list[Path]:
    """Every place a session of this host may have made its work dir (for the sweep)."""
    bases = [work_base(), Path(tempfile.gettempdir()), SHM]
    return [b for i, b in enumerate(bases) if b.is_dir() and b not in bases[:i]]


#: beside each driver's state root: the runtime's argv up to the verb, for sweep_dead
SWEEP_SUFFIX = ".argv"


class RunSession:
    def __init__(self, runtime_flags: dict[str, list[str]] | None = None) -> None:
        self.runtime_flags = runtime_flags or {}
        # One tag names everything this process makes on the host (state root, work
        # dir, container ids), so leftovers can be told from other runs' objects.
        self._tag = os.environ.get("OCI_CONFORMANCE_TAG") or secrets.token_hex(4)
        self._state_root = STATE_BASE / f"oci-conformance-{self._tag}-{os.getpid()}"
        self._workdir: Path | None = None
        self._profiles: dict[str, RuntimeProfile | RuntimeNotFound] = {}
        self._drivers: dict[tuple[str, tuple[str, ...]], RuntimeDriver] = {}
        #: drivers whose lane cannot run on this host (asked once: every scenario gets the same answer)
        self._unavailable: dict[tuple[str, tuple[str, ...]], NotApplicable] = {}
        #: the next scenario's bundle, written while the current one ran (host/ahead.py)
        self._ahead: ahead.Written | None = None

    @property
    def workdir(self) -> Path:
        """Where bundles are written (one sub-directory per container, removed after it)."""
        if self._workdir is None:
            # the pid in the name lets a later run sweep what a killed one left (sweep_dead)
            self._workdir = Path(tempfile.mkdtemp(prefix=f"oci-conformance-{self._tag}-{os.getpid()}-",
                                                  dir=work_base()))
            # mkdtemp makes it 0700; a user-namespaced container's root (a mapped,
            # unprivileged host uid) must be able to traverse it to reach its rootfs.
            self._workdir.chmod(0o711)
        return self._workdir

    def new_container_id(self) -> str:
        return f"cf-{self._tag}-{secrets.token_hex(4)}"

    def profile(self, name: str) -> RuntimeProfile:
        """The resolved runtime (a name or path, no lane); raises RuntimeNotFound (remembered) when it is missing."""
        if name not in self._profiles:
            try:
                self._profiles[name] = resolve(name, self.runtime_flags.get(name))
            except RuntimeNotFound as exc:
                self._profiles[name] = exc
        found = self._profiles[name]
        if isinstance(found, RuntimeNotFound):
            raise found
        return found

    def driver(self, name: str, disabled: tuple[str, ...] = ()) -> RuntimeDriver:
        """The driver for a ``--runtime`` value, in the lane it names (``drivers.parse``);
        ``disabled`` switches (ref only) make a negative-control variant."""
        key = (name, disabled)
        if key in self._unavailable:
            raise self._unavailable[key]
        if key not in self._drivers:
            lane = drivers.parse(name)
            profile = self.profile(lane.runtime)
            if disabled:
                self._check_switches(profile, disabled)
                profile = dataclasses.replace(profile, global_flags=[*profile.global_flags,
                                                                     "--disable", ",".join(disabled)])
            column = lane.driver_class.qualify(profile.name)
            root = self._state_root / (re.sub(r"[^\w.-]", "-", column) + "".join(f"-no-{d}" for d in disabled))
            root.mkdir(parents=True, exist_ok=True)
            # how to reach this root's containers without this process: for sweep_dead (written first, so
            # a run killed while the driver is made is swept too; then as the lane reaches them)
            root.with_name(root.name + SWEEP_SUFFIX).write_text(json.dumps(profile.argv(root)))
            try:
                made = self._drivers[key] = lane.driver_class(profile, root)
            except NotApplicable as exc:
                self._unavailable[key] = exc
                raise
            root.with_name(root.name + SWEEP_SUFFIX).write_text(json.dumps(made.sweep_argv()))
        return self._drivers[key]

    def made_driver(self, name: str, disabled: tuple[str, ...] = ()) -> RuntimeDriver | None:
        """The driver ``driver()`` made already, if it did (asking makes nothing)."""
        return self._drivers.get((name, disabled))

    def keep_ahead(self, written: ahead.Written) -> None:
        """Keep a bundle written ahead (one at most: an earlier one nobody took is removed)."""
        if self._ahead is not None:
            self._ahead.bundle.remove()
        self._ahead = written

    def take_ahead(self) -> ahead.Written | None:
        """The bundle written ahead, now the caller's to use or remove."""
        written, self._ahead = self._ahead, None
        return written

    def sandbox(self, name: str, timeout: float = sandbox.PROBE_TIMEOUT_S) -> SandboxProbe:
        """Whether the runtime a ``--runtime`` value names runs its containers in a sandbox.

        Probed once (host/sandbox.py) and kept in that runtime's driver; a
        negative-control variant of it asks the runtime as it is, switches on.
        ``timeout``: the scenario's own, so a probe never waits longer than it would.
        """
        driver = self.driver(name)
        if driver.sandbox is None:
            driver.sandbox = sandbox.probe(driver, self.workdir, self.new_container_id(), timeout)
        return driver.sandbox

    def know_sandbox(self, name: str, found: SandboxProbe) -> None:
        """What an earlier probe on this host found (the agent is a new process per scenario)."""
        self.driver(name).sandbox = found

    def _check_switches(self, profile: RuntimeProfile, disabled: tuple[str, ...]) -> None:
        """A control needs switches the runtime has: an unknown one must be an error, not a 'fail'.

        (A runtime that rejects an unknown switch exits non-zero, which would
        otherwise look exactly like the scenario failing as it should.)
        """
        if not hasattr(self, "_switches"):
            done = subprocess.run([*profile.command, "features"], capture_output=True, text=True, timeout=30)
            try:
                self._switches = set(json.loads(done.stdout).get("switches", []))
            except ValueError:
                self._switches = set()
        unknown = [d for d in disabled if d not in self._switches]
        if unknown:
            raise ConformanceError(f"{profile.name} has no switch {', '.join(unknown)} for this negative control "
                                   f"(its switches: {', '.join(sorted(self._switches)) or 'none'})")

    def close(self) -> list[str]:
        """Remove every container, state root and bundle this process made. Returns leftovers found."""
        # the bundles whose removal waited for a wait (host/idle.py); one written ahead for a scenario
        # that never came (-x, Ctrl-C: host/ahead.py) is a plain copy in the work dir, removed with it below
        leftovers = idle.finish()
        for (name, _), driver in self._drivers.items():
            try:  # one driver's failure must not keep the others' containers (or a daemon) alive
                cleaned = driver.remove_containers() if isinstance(driver, CliDriver) else driver.cleanup()
            except Exception as exc:  # noqa: BLE001 - reported as a leftover; the rest is still cleaned
                cleaned = [f"cleanup failed: {exc}"]
            leftovers += [f"{name}:{cid}" for cid in cleaned]
        for cls in drivers.DRIVERS.loaded():  # a lane whose module was never imported made nothing here
            leftovers += cls.close_session(self._state_root)
        roots = [driver.root for driver in self._drivers.values() if isinstance(driver, CliDriver)]
        if roots:  # one pass over /proc for every CLI driver's root (see CliDriver.cleanup)
            leftovers += [f"process {pid}" for pid in kill_naming(roots)]
        shutil.rmtree(self._state_root, ignore_errors=True)
        if self._workdir is not None:
            # an image's overlay still mounted (a bundle not removed) must not be walked into by rmtree
            leftovers += [f"mount {p}" for p in unmount_tree(self._workdir)]
            shutil.rmtree(self._workdir, ignore_errors=True)
        return leftovers


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def sweep_dead(tag: str | None = None) -> list[str]:
    """Remove what sessions left when their process was killed (SIGKILL: no cleanup ran).

    A session's state root (``/run/oci-conformance-TAG-PID``) and work dir
    (``WORK_BASE/oci-conformance-TAG-PID-…``, see work_base) carry the pid of the process that
    made them; for each such pid that no longer runs (of run ``tag``, or of
    any run whose tag is one of the forms this project makes: ``OWN_TAG``),
    each lane removes what it keeps beyond its runtime's containers
    (containerd's daemon and shims: ``RuntimeDriver.sweep_dead``), every
    container still listed under a driver's root is force-deleted with the
    runtime's argv saved beside it, any process still naming the root is
    killed (a daemon whose directory something else removed is found so),
    and the roots and work dirs go (unmounted first).  Then the cgroups
    named after containers (``cf-TAG-…``) of the runs those dead sessions
    belonged to, unless a session of that run lives on, the network
    namespaces of host setup ``bridge_net`` and the canary links and routes
    of ``net_canary`` that reached the host, whose maker no longer runs, and
    the work dirs of qemu guests of dead harnesses.
    A live session's things are never touched; nothing that is not named so
    is looked at.  Returns what was removed, for the log.
    """
    removed: list[str] = []
    dead_tags = set()
    for state in _dead_state_roots(tag):
        dead_tags.add(_tag_of(state))
        for cls in drivers.DRIVERS.values():  # imports every lane: only now that a killed session was found
            removed += cls.sweep_dead(state)
        for saved in state.glob(f"*{SWEEP_SUFFIX}"):
            try:
                removed += _delete_all(json.loads(saved.read_text()))
            except (OSError, ValueError):
                pass
        removed += [f"process {pid}" for pid in proctable.kill_all(proctable.naming(f"{state}/"))]
        unmount_tree(state)
        shutil.rmtree(state, ignore_errors=True)
        removed.append(str(state))
    for work in (w for base in work_bases() for w in _dead(base, tag, r"-(?P<pid>\d+)-[^-/]+")):
        dead_tags.add(_tag_of(work))
        unmount_tree(work)
        shutil.rmtree(work, ignore_errors=True)
        removed.append(str(work))
    removed += _sweep_cgroups(dead_tags - {""})
    removed += bridge_net.sweep_dead(_tag_pattern(tag))
    removed += host_setup.sweep_dead_canaries()
    removed += _sweep_guest_dirs(tag)
    reap_adopted()  # what was killed and re-parented to us (a subreaper) is not left a zombie
    return removed


#: the tags this project makes: a run's (RunSession, the plugin: secrets.token_hex(4)), the project's
#: tests' (tests/conftest.py RUN_TAG) and the benchmarks' (bench/); OCI_CONFORMANCE_TAG may say otherwise
OWN_TAG = "(?:[0-9a-f]{8}|t[0-9a-f]{6}|bench[0-9a-f]{6}|bh[0-9a-f]{6})"


def _tag_pattern(tag: str | None) -> str:
    return OWN_TAG if tag is None else re.escape(tag)


def _dead(base: Path, tag: str | None, tail: str, prefix: str = "oci-conformance-") -> list[Path]:
    """Directories under ``base`` named ``prefix`` + TAG + ``tail`` whose pid no longer runs."""
    named = re.compile(f"{re.escape(prefix)}{_tag_pattern(tag)}{tail}")
    found = []
    for path in base.glob(f"{prefix}*"):
        match = named.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink() and not _alive(int(match.group("pid"))):
            found.append(path)
    return found


def _dead_state_roots(tag: str | None) -> list[Path]:
    """Dead sessions' state roots: the directories, and the ones only a process still names.

    A root can be gone while what used it runs on (crun 1.8's ``delete
    --force ..`` removes its ``--root``'s parent, the session's root, with a
    private containerd's config in it): its daemon and shims name the root
    on their command line, which is how they are found.
    """
    found = set(_dead(STATE_BASE, tag, r"-(?P<pid>\d+)"))
    named = re.compile(f"{re.escape(str(STATE_BASE))}/(oci-conformance-{_tag_pattern(tag)}-(?P<pid>\\d+))(?:/|$)")
    for _, args in proctable.cmdlines():
        for arg in args:
            match = named.search(arg)
            if match and not _alive(int(match.group("pid"))):
                found.add(STATE_BASE / match.group(1))
    return sorted(found)


def _tag_of(path: Path, prefix: str = "oci-conformance-") -> str:
    """The run tag in a session's state root or work dir name (``oci-conformance-TAG-PID[-…]``)."""
    match = re.fullmatch(f"{re.escape(prefix)}(?P<tag>.+?)-\\d+(?:-[^-/]+)?", path.name)
    return match.group("tag") if match else ""


def _live_tags() -> set[str]:
    """The tags of sessions whose process runs (their state roots and work dirs name them)."""
    live = set()
    for base, tail in ((STATE_BASE, r"-(?P<pid>\d+)"), *((b, r"-(?P<pid>\d+)-[^-/]+") for b in work_bases())):
        named = re.compile(f"oci-conformance-(?P<tag>.+?){tail}")
        live |= {m.group("tag") for p in base.glob("oci-conformance-*")
                 if (m := named.fullmatch(p.name)) and _alive(int(m.group("pid")))}
    return live


def _sweep_cgroups(dead_tags: set[str]) -> list[str]:
    """Containers' cgroups (``/cf-TAG-…``: the cgroupsPath bundle.build writes) of the runs a dead
    session shows were killed, when no session of that run lives on: what their containers left
    where the runtime's state was already gone (nothing lists them any more)."""
    tags = dead_tags - _live_tags()
    if not tags:
        return []
    named = re.compile(f"cf-(?:{'|'.join(map(re.escape, sorted(tags)))})-[0-9a-f]{{8}}")
    found = sorted({d.name for mp in set(cgroupfs.mounts().values()) for d in mp.glob("cf-*") if named.fullmatch(d.name)})
    return [f"cgroup {d}" for name in found for d in cgroupfs.remove_leftovers(f"/{name}")]


def _sweep_guest_dirs(tag: str | None) -> list[str]:
    """qemu guests' work dirs (hosts/qemu.py: ``oci-conformance-guest-TAG-PID-…``) of harnesses that
    no longer run (their qemu died with them: it is started with PR_SET_PDEATHSIG)."""
    removed = []
    for d in _dead(Path(tempfile.gettempdir()), tag, r"-(?P<pid>\d+)-[^-/]+", prefix="oci-conformance-guest-"):
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    return removed


def _delete_all(argv: list[str]) -> list[str]:
    """Force-delete every container the runtime lists at the root ``argv`` names, and its cgroup."""
    try:
        listed = subprocess.run([*argv, "list", "-q"], capture_output=True, text=True, timeout=30).stdout.split()
        for cid in listed:
            subprocess.run([*argv, "delete", "--force", cid], capture_output=True, timeout=30)
            cgroupfs.remove_leftovers(f"/{cid}")
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [f"container {cid}" for cid in listed]
