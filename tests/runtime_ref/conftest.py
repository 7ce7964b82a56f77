"""Fixtures for runtime-ref's own tests: a busybox bundle, a private --root,
and a check that nothing (container, cgroup, mount, state) outlives a test.

These tests drive the real kernel as root; nothing is mocked.
"""
from __future__ import annotations

import ctypes
import glob
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "runtime_ref" / "bin" / "runtime-ref"
sys.path.insert(0, str(REPO))

if os.geteuid() != 0:
    pytest.skip("runtime-ref tests need root (namespaces, mounts, cgroups)", allow_module_level=True)


def _busybox_rootfs(dest: Path) -> None:
    for sub in ("bin", "proc", "sys", "dev", "tmp", "etc", "root", "mnt"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", dest / "bin" / "busybox")
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        if a != "busybox":
            (dest / "bin" / a).symlink_to("busybox")
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/sh\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")


@pytest.fixture(scope="session")
def busybox_template(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rootfs-template") / "rootfs"
    _busybox_rootfs(d)
    return d


def base_config() -> dict:
    """The harness's base config (what Docker hands runc), with `true` as the process."""
    from conformance.host.base_spec import base_spec
    cfg = base_spec()
    cfg["process"]["args"] = ["true"]
    return cfg


class Ref:
    """One test's runtime-ref: a private --root, a bundle, and the ids it created."""

    def __init__(self, tmp: Path, template: Path) -> None:
        self.tmp = tmp
        for d in (tmp, *tmp.parents):  # pytest makes them 0700: let a user-namespaced root in
            if d.stat().st_mode & 0o005 == 0:
                d.chmod(0o755)
        self.root = tmp / "state"
        self.bundle = tmp / "bundle"
        self.bundle.mkdir()
        shutil.copytree(template, self.bundle / "rootfs", symlinks=True)
        self.tag = f"cf-rt{os.getpid()}x{secrets.token_hex(3)}"  # the pid lets a later run sweep a killed one's
        self.n = 0
        self.ids: list[str] = []
        self.config = base_config()

    def new_id(self) -> str:
        self.n += 1
        cid = f"{self.tag}-{self.n}"
        self.ids.append(cid)
        return cid

    def write_config(self, config: dict | None = None, cid: str | None = None) -> None:
        cfg = json.loads(json.dumps(config if config is not None else self.config))
        cfg.setdefault("linux", {}).setdefault("cgroupsPath", "/" + (cid or self.tag))
        (self.bundle / "config.json").write_text(json.dumps(cfg))

    def cmd(self, *args: str, disable: str | None = None, env: dict | None = None,
            timeout: float = 60, fds: tuple[int, ...] = (), **kw) -> subprocess.CompletedProcess:
        """Run runtime-ref; ``fds``: descriptors it is started with at 3, 4, … (as a caller hands them)."""
        argv = [str(LAUNCHER), "--root", str(self.root)]
        if disable:
            argv += ["--disable", disable]
        e = dict(os.environ)
        e.pop("RUNTIME_REF_DISABLE", None)
        e.update(env or {})
        kw.setdefault("stdin", subprocess.DEVNULL)
        if "stdout" not in kw:
            kw.setdefault("capture_output", True)
        parked: list[int] = []
        argv += list(args)
        if fds:
            from conformance.host.drivers.procs import with_fds_at_3
            argv, parked, e = with_fds_at_3(argv, fds, e)
            kw["pass_fds"] = parked
        try:
            return subprocess.run(argv, text=True, timeout=timeout, env=e, **kw)
        finally:
            for fd in parked:
                os.close(fd)

    def run(self, shell: str, config: dict | None = None, disable: str | None = None,
            patch=None, extra: list[str] | tuple[str, ...] = (), **kw) -> subprocess.CompletedProcess:
        """`runtime-ref run [extra flags]` of `sh -c shell` with the base config (+ patch(config))."""
        cfg = json.loads(json.dumps(config if config is not None else self.config))
        cfg["process"]["args"] = ["sh", "-c", shell]
        if patch:
            patch(cfg)
        cid = self.new_id()
        self.write_config(cfg, cid)
        return self.cmd("run", "--bundle", str(self.bundle), *extra, cid, disable=disable, **kw)

    def create(self, args: list[str], config: dict | None = None, disable: str | None = None,
               **kw) -> str:
        cfg = json.loads(json.dumps(config if config is not None else self.config))
        cfg["process"]["args"] = args
        cid = self.new_id()
        self.write_config(cfg, cid)
        # the init keeps create's stdout/stderr: files, not pipes nobody would close
        with open(self.tmp / f"{cid}.out", "w+") as out, open(self.tmp / f"{cid}.err", "w+") as err:
            done = self.cmd("create", "--bundle", str(self.bundle), cid, disable=disable,
                            capture_output=False, stdout=out, stderr=err, **kw)
            err.seek(0)
            assert done.returncode == 0, err.read()
        return cid

    def output(self, cid: str) -> str:
        """What the container wrote to stdout so far."""
        return (self.tmp / f"{cid}.out").read_text()

    def state(self, cid: str) -> dict:
        done = self.cmd("state", cid)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def cleanup(self) -> None:
        for cid in self.ids:
            self.cmd("delete", "--force", cid)


def reap(pid: int, timeout: float = 10.0) -> int | None:
    """Wait for an adopted init (we are a subreaper); exit status as 128+N for signals."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if done:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        time.sleep(0.005)
    raise TimeoutError(f"pid {pid} still running")


def leftovers(ref: Ref) -> list[str]:
    found = [f"cgroup {p}" for p in glob.glob(f"/sys/fs/cgroup/*/{ref.tag}*")]
    found += [f"cgroup {p}" for p in glob.glob(f"/sys/fs/cgroup/{ref.tag}*")]
    with open("/proc/self/mountinfo") as f:
        found += [f"mount {line.split()[4]}" for line in f if str(ref.tmp) in line]
    if ref.root.exists():
        found += [f"state {p}" for p in ref.root.iterdir()]
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session", autouse=True)
def sweep_killed_runs():
    """Cgroups a killed test run left (its tag carries its pid, now dead): empty ones are removed.

    A cgroup with a process still in it is left alone and named, never killed: it may not be ours.
    """
    for path in sorted(glob.glob("/sys/fs/cgroup/*/cf-rt*x*") + glob.glob("/sys/fs/cgroup/cf-rt*x*"),
                       key=len, reverse=True):
        pid = os.path.basename(path)[len("cf-rt"):].split("x", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        for sub in sorted((d for d, _, _ in os.walk(path)), key=len, reverse=True):
            try:
                os.rmdir(sub)
            except OSError as exc:
                print(f"runtime_ref tests: could not sweep {sub} ({exc})", file=sys.stderr)
    yield


@pytest.fixture(scope="session", autouse=True)
def subreaper():
    """Adopt the inits that `create` leaves behind, as a container engine's shim does."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    yield


@pytest.fixture
def ref(tmp_path, busybox_template):
    r = Ref(tmp_path, busybox_template)
    try:
        yield r
    finally:
        r.cleanup()
        left = leftovers(r)
        # reap whatever inits we adopted from this test
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
    assert left == [], f"left behind: {left}"
