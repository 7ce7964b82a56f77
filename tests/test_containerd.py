"""The engine lane on a real containerd: its private daemon, its images, its cleanup, one scenario per area.

containerd is the Debian package ci/setup.sh installs; every test here
starts daemons of its own (never the system's service or socket) and checks
that nothing of them outlives it: no process, mount, shim socket, state
root or work dir — after an orderly end, after Ctrl-C, and, swept by the
next run, after SIGKILL.
"""
from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance.host.engine import api, daemon, exec_process, images, wire
from conformance.host.image import unmount_tree
from conformance.host.session import RunSession, sweep_dead
from conformance.model.errors import DriverError
from conformance.model.image_spec import ImageSpec
from tests.conftest import (
    LONG,
    REPO,
    RUN_TAG,
    SUITE_ENV,
    host_leftovers,
    known_gaps,
    run_suite,
    suite_command,
    write_scenarios,
)

pytestmark = pytest.mark.skipif(daemon.binary() is None or shutil.which("runc") is None,
                                reason="containerd or runc is not installed (ci/setup.sh installs both)")



# -- the wire, without a daemon -------------------------------------------------------------------
def test_hpack_reads_rfc_7541s_huffman_examples():
    """RFC 7541 C.4: the Huffman-coded strings of its request examples, decoded."""
    assert wire.huffman_decode(bytes.fromhex("f1e3c2e5f23a6ba0ab90f4ff")) == b"www.example.com"
    assert wire.huffman_decode(bytes.fromhex("a8eb10649cbf")) == b"no-cache"
    assert wire.huffman_decode(bytes.fromhex("25a849e95ba97d7f")) == b"custom-key"
    assert wire.huffman_decode(bytes.fromhex("25a849e95bb8e8b4bf")) == b"custom-value"
    with pytest.raises(wire.WireError):
        wire.huffman_decode(b"\x00")  # padding must be ones


def test_hpack_keeps_its_dynamic_table_across_blocks():
    """RFC 7541 C.4.1 and C.4.2: a field added with indexing is named by index in the next block."""
    decoder = wire.HeaderDecoder()
    first = decoder.decode(bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff"))
    assert first == [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]
    second = decoder.decode(bytes.fromhex("828684be5886a8eb10649cbf"))
    assert second[-2:] == [(":authority", "www.example.com"), ("cache-control", "no-cache")]


def test_protobuf_fields_round_trip():
    message = wire.Message().data(1, "id").number(3, 300).strings(4, ["a", "b"]).entries(2, {"k": "v"}).done()
    found = wire.fields(message)
    assert wire.first_str(found, 1) == "id" and wire.first_int(found, 3) == 300
    assert found[4] == [b"a", b"b"] and wire.fields(found[2][0]) == {1: [b"k"], 2: [b"v"]}


# -- the private daemon -------------------------------------------------------------------------
def test_exec_flags_change_the_container_s_process_as_runc_s_exec_does(tmp_path):
    """Tasks.Exec gets the container's process with runc's exec flags applied (runc 1.1 exec.go): the command,
    uid[:gid], env appended, extra gids, --cap in bounding/effective/permitted (ambient only beside an
    inheritable set), no_new_privs; a --process file replaces the process whole."""
    base = {"args": ["sh"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 7},
            "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"], "permitted": ["CAP_CHOWN"]},
            "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4}}
    args = exec_process.parser().parse_args(
        ["--address", "a", "--namespace", "n", "--fifo-dir", "f", "--user", "1000", "--env", "FOO=bar", "--cwd",
         "/tmp", "--cap", "CAP_SYS_NICE", "--additional-gids", "10", "--no-new-privs", "cid", "id", "-u"])
    got = exec_process.process_spec(base, args)
    assert got["args"] == ["id", "-u"] and got["cwd"] == "/tmp" and got["env"] == ["PATH=/bin", "FOO=bar"]
    assert got["user"] == {"uid": 1000, "gid": 7, "additionalGids": [10]} and got["noNewPrivileges"] is True
    assert got["capabilities"] == {k: ["CAP_CHOWN", "CAP_SYS_NICE"] for k in ("bounding", "effective", "permitted")}
    assert got["ioPriority"] == base["ioPriority"] and base["user"]["uid"] == 0  # kept; the container's untouched
    with_inh = {**base, "capabilities": {**base["capabilities"], "inheritable": ["CAP_CHOWN"]}}
    assert "CAP_SYS_NICE" in exec_process.process_spec(with_inh, args)["capabilities"]["ambient"]
    (tmp_path / "p.json").write_text('{"args": ["true"], "cwd": "/"}')
    whole = exec_process.parser().parse_args(["--address", "a", "--namespace", "n", "--fifo-dir", "f",
                                              "--process", str(tmp_path / "p.json"), "cid"])
    assert exec_process.process_spec(base, whole) == {"args": ["true"], "cwd": "/"}


def _processes_naming(mark: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if mark in cmdline and int(pid) != os.getpid():
            found.append(f"{pid} {cmdline}")
    return found


def test_the_private_daemon_starts_answers_and_goes(tmp_path):
    base = Path(f"/run/oci-conformance-{RUN_TAG}-{os.getpid()}-daemon") / "containerd"
    engine = daemon.Daemon.start(base)
    try:
        assert engine.address == str(base / "grpc.sock") and Path(engine.address).is_socket()
        assert "/run/containerd/containerd.sock" not in (base / "config.toml").read_text()
        installed = subprocess.run([daemon.binary(), "--version"], capture_output=True, text=True).stdout
        assert engine.version and engine.version in installed
        assert api.version(engine.address) == engine.version
        assert _processes_naming(str(base))  # the daemon, by its own config
        assert engine.health() == ""
    finally:
        assert engine.stop() == []  # an orderly end: nothing had to be killed or unmounted
        shutil.rmtree(base.parent, ignore_errors=True)
    assert not base.exists() and _processes_naming(str(base)) == []
    assert f"exited with status {engine.proc.returncode}" in engine.health()  # what a failed call then says


def test_a_vanished_socket_is_said_in_the_error(tmp_path):
    """A daemon whose socket something else removed: the cell's error says so, not just ENOENT."""
    base = Path(f"/run/oci-conformance-{RUN_TAG}-{os.getpid()}-vanish") / "containerd"
    engine = daemon.Daemon.start(base)
    try:
        Path(engine.address).unlink()
        assert "still runs but its socket" in engine.health() and engine.address in engine.health()
    finally:
        engine.stop()
        shutil.rmtree(base.parent, ignore_errors=True)
    assert not base.exists() and _processes_naming(str(base)) == []


def test_a_daemon_that_never_answers_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    fake = tmp_path / "containerd"
    fake.write_text("#!/bin/sh\nexec sleep 60\n")
    fake.chmod(0o755)
    monkeypatch.setattr(daemon, "binary", lambda: str(fake))
    base = tmp_path / "run" / "containerd"
    with pytest.raises(DriverError, match=r"containerd did not answer on .*grpc.sock within 1s"):
        daemon.Daemon.start(base, timeout=1.0)
    assert not base.exists() and _processes_naming(str(base)) == []


def test_a_column_without_containerd_is_an_error_in_every_cell_and_the_others_run(tmp_path, monkeypatch):
    """PATH without containerd: the containerd column's cells are errors saying so, runc's run."""
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("runc", "sh", "unshare", "python3"):
        if shutil.which(tool):
            (bare / tool).symlink_to(shutil.which(tool))
    sc = write_scenarios(tmp_path / "sc", {"p.yaml": LONG.replace("sleep 91", "echo $$").replace(
        "expect: {exit: 0}", 'expect: {exit: 0, stdout: "1"}')})
    env = {**SUITE_ENV, "PATH": f"{bare}:{Path(sys.executable).parent}"}
    done = subprocess.run(suite_command(sc, tmp_path / "out", "--runtime=runc,containerd/runc"), cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)
    import json

    matrix = json.loads((tmp_path / "out" / "matrix.json").read_text())
    cells = {r["runtime"]: r for r in matrix["results"]}
    assert cells["runc"]["verdict"] == "pass", done.stdout[-2000:]
    assert cells["containerd/runc"]["verdict"] == "error"
    assert "containerd is not installed on this host" in cells["containerd/runc"]["evidence"]


# -- images through containerd's importer and snapshotter ------------------------------------------
IMAGE = ImageSpec.from_yaml({"layers": [
    {"files": {"/etc/app.conf": "v1\n", "/srv/data/old": "1\n", "/srv/keep": "k\n"}},
    {"whiteouts": ["/etc/hostname"], "opaque": ["/srv/data"], "files": {"/srv/data/new": "2\n"}},
]})


def test_an_image_with_whiteouts_and_an_opaque_dir_is_unpacked_by_containerd(no_leftovers):
    session = RunSession()
    try:
        driver = session.driver("containerd/runc")
        cid = session.new_container_id()
        bundle = session.workdir / cid
        bundle.mkdir()
        mounted = driver.images.mount(IMAGE, bundle, bundle / "rootfs")
        notes = mounted.variables()
        snapshots = driver.engine.base / "root" / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
        # the layers are containerd's snapshots, not the harness's cache
        assert all(Path(p).parent.parent == snapshots for p in [*map(str, mounted.layers), str(mounted.base),
                                                                  str(mounted.upper)])
        assert notes["snapshotter"] == "containerd overlayfs" and notes["image_digest"].startswith("sha256:")
        tag = driver.client.image_target(images.layout(IMAGE).name)
        assert tag == notes["image_digest"]
        top = mounted.layers[1]
        whiteout = os.lstat(top / "etc" / "hostname")  # containerd's applier: a 0/0 character device
        assert stat.S_ISCHR(whiteout.st_mode) and whiteout.st_rdev == os.makedev(0, 0)
        assert os.getxattr(top / "srv" / "data", "trusted.overlay.opaque") == b"y"
        assert (top / "srv" / "data" / "new").read_text() == "2\n"
        assert (mounted.layers[0] / "srv" / "data" / "old").read_text() == "1\n"
        assert not (top / "etc" / ".wh.hostname").exists()
        key = notes["snapshot"]
        mounted.unmount()
        with pytest.raises(wire.RpcError):
            driver.client.prepare(images.SNAPSHOTTER, key, "nope", {})  # gone: a new prepare needs a parent
    finally:
        session.close()


# -- one scenario per area on each containerd column --------------------------------------------
PER_AREA = ["pid-ns-init-is-pid1", "memory-limit-written", "overlay-whiteout-hides-lower-file", "caps-drop-one",
            "lifecycle-create-start-stop", "freezer-delete-force-paused-leaves-nothing", "exec-process-flags",
            "terminal-is-a-tty"]
#: a scenario the engine lane cannot express (a `cli` step: the runtime's own command line): skipped, saying so
NOT_EXPRESSED = "cli-unknown-verb-refused"


@pytest.mark.parametrize("runtime", ["runc", "crun", "ref"])
def test_one_scenario_per_area_on_each_containerd_column(tmp_path, runtime, no_leftovers):
    if runtime != "ref" and shutil.which(runtime) is None:
        pytest.skip(f"{runtime} is not installed")
    selected = " or ".join([*PER_AREA, NOT_EXPRESSED])
    run = run_suite(None, tmp_path / "out", f"--runtime=containerd/{runtime}", "-k", selected)
    column = f"containerd/{runtime}"
    verdicts = {s: v for (s, r), v in run.verdicts().items() if r == column}
    assert verdicts == {**{s: "pass" for s in PER_AREA}, NOT_EXPRESSED: "skip"}, run.output[-3000:]
    assert "the `cli` steps run the runtime's own command line" in run.result(NOT_EXPRESSED, column)["evidence"]
    entry = run.matrix["runtimes"][column]
    assert entry["engine"].startswith("containerd 1.") and entry["shim"] == "io.containerd.runc.v2"
    assert any(a.startswith("containerd:") for a in entry["adaptations"])
    overlay = run.result("overlay-whiteout-hides-lower-file", column)
    assert overlay["snapshotter"] == "containerd overlayfs" and overlay["image_digest"].startswith("sha256:")
    assert f"image {overlay['image_digest']} unpacked and mounted by containerd overlayfs" in overlay["evidence"]


# -- what the stack changes: tests/known_gaps.yaml's containerd/NAME lists ------------------------
@pytest.mark.parametrize("runtime", ["ref", "runc"])
def test_the_stack_findings_hold_they_pass_bare_and_fail_through_containerd(tmp_path, runtime, no_leftovers):
    """Each containerd/NAME gap that is not NAME's own is the stack's: the scenario passes on bare NAME, fails
    through containerd, and the matrix lists it where the stack changes the verdict."""
    gaps = sorted(set(known_gaps(f"containerd/{runtime}")) - set(known_gaps(runtime)))
    assert gaps, f"tests/known_gaps.yaml lists what containerd changes for {runtime}"
    assert set(known_gaps(runtime)) <= set(known_gaps(f"containerd/{runtime}")), "NAME's own gaps hold through it"
    out = tmp_path / "out"
    run = run_suite(None, out, f"--runtime={runtime},containerd/{runtime}", "-k", " or ".join(gaps))
    verdicts = run.verdicts()
    assert {s: verdicts[(s, runtime)] for s in gaps} == {s: "pass" for s in gaps}, run.output[-3000:]
    assert {s: verdicts[(s, f"containerd/{runtime}")] for s in gaps} == {s: "fail" for s in gaps}, run.output[-3000:]
    listed = (out / "matrix.md").read_text().split("## Where the stack changes the verdict", 1)[1]
    assert all(f"**{s}** on local: {runtime} pass, containerd/{runtime} fail" in listed for s in gaps), listed[:3000]


# -- cleanup: Ctrl-C, and a later run after SIGKILL ----------------------------------------------
def _start_long_run(tmp_path: Path, tag: str = RUN_TAG) -> subprocess.Popen[bytes]:
    sc = write_scenarios(tmp_path / "sc", {"t.yaml": LONG})
    proc = subprocess.Popen(suite_command(sc, tmp_path / "out", "--runtime=containerd/runc"), cwd=REPO,
                            env={**SUITE_ENV, "OCI_CONFORMANCE_TAG": tag}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not any("containerd-shim" in x for x in host_leftovers(tag)) or \
            not any(x.startswith("process") and "sleep" in x for x in host_leftovers(tag)):
        assert time.monotonic() < deadline and proc.poll() is None, "the container never started"
        time.sleep(0.05)
    return proc


def test_ctrl_c_stops_the_daemon_and_its_shims(tmp_path, no_leftovers):
    proc = _start_long_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert b"KeyboardInterrupt" in out


def test_a_later_run_sweeps_what_a_killed_one_left(tmp_path, no_leftovers):
    proc = _start_long_run(tmp_path)
    proc.kill()  # SIGKILL: no cleanup runs; the daemon, shim and container live on
    proc.wait()
    left = host_leftovers()
    assert any("containerd --config" in x for x in left) and any("containerd-shim" in x for x in left)
    assert any(x.startswith("state ") for x in left)
    removed = sweep_dead(RUN_TAG)  # what the next run's start does (plugin/hooks.py), for this run's tag
    assert any(r.startswith(f"/run/oci-conformance-{RUN_TAG}-") for r in removed), removed
    assert any("container cf-" in r for r in removed), removed


def test_a_daemon_whose_session_directory_was_removed_is_still_swept(tmp_path):
    """The leak seen once: daemons left running whose state root something had removed (crun 1.8's
    ``delete --force ..`` removes its --root's parent).  A later run finds the daemon and its shims by
    the root their command lines name, computes the shims' sockets from theirs, and removes the
    orphaned container's cgroups (its runtime state went with the root): nothing is left."""
    # a run of its own (no live session of it holds its cgroups), of a tag no suite started meanwhile by
    # another test sweeps at its start (session.OWN_TAG): only this test's sweep may take what it left
    tag = "sweep" + secrets.token_hex(3)
    before = host_leftovers(tag)
    proc = _start_long_run(tmp_path, tag)
    try:
        proc.kill()
        proc.wait()
        [state] = glob.glob(f"/run/oci-conformance-{tag}-*")
        unmount_tree(Path(state))
        shutil.rmtree(state)  # what crun's bug did, with the daemon running
        left = host_leftovers(tag)
        assert any("containerd --config" in x for x in left) and any("containerd-shim" in x for x in left)
        assert any(x.startswith("cgroup ") for x in left), left
        removed = sweep_dead(tag)
        assert state in removed, removed
        assert any("shim socket" in r for r in removed) and any(r.startswith("cgroup ") for r in removed), removed
    finally:
        sweep_dead(tag)
        assert host_leftovers(tag) - before == set()


def test_closing_a_session_stops_its_daemon_even_when_a_column_fails_to_clean_up(monkeypatch):
    session = RunSession()
    driver = session.driver("containerd/runc")
    base = driver.engine.base

    def broken() -> list[str]:
        raise DriverError("the column's cleanup failed half-way")

    monkeypatch.setattr(driver, "cleanup", broken)
    left = session.close()
    assert any("cleanup failed" in x for x in left) and any("still running at the session's end" in x for x in left)
    assert driver.engine.proc.poll() is not None and not base.exists()


def test_a_column_that_fails_to_construct_does_not_hold_the_daemon(monkeypatch):
    from conformance.host.drivers import containerd

    started: list[daemon.Daemon] = []
    real_start = daemon.Daemon.start

    def start(base: Path, timeout: float = daemon.START_TIMEOUT_S) -> daemon.Daemon:
        started.append(real_start(base, timeout))
        return started[-1]

    def no_images(*args: object) -> None:
        raise DriverError("images could not be set up")

    monkeypatch.setattr(daemon.Daemon, "start", staticmethod(start))
    monkeypatch.setattr(containerd, "Images", no_images)
    session = RunSession()
    try:
        with pytest.raises(DriverError, match="images could not be set up"):
            session.driver("containerd/runc")
        assert started and started[0].proc.poll() is not None, "the daemon stopped with the failed column"
    finally:
        session.close()
