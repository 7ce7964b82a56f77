"""Image layers: OCI layer tarballs, a snapshotter's unpacking, a real overlay as the rootfs, and its cleanup."""
from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import tarfile
import time

import pytest

from conformance.catalog.loader import load_scenarios
from conformance.host import bundle, image
from conformance.host.session import RunSession
from conformance.model import image_spec, placeholders
from conformance.model.errors import ScenarioError
from tests.conftest import REPO, SUITE_ENV, host_leftovers, run_suite, suite_command, write_scenarios

TWO_LAYERS = {"layers": [
    {"files": {"/etc/a": "lower\n", "/etc/only-lower": "o\n", "/srv/data/old": "1\n", "/srv/sibling": "s\n"}},
    {"files": {"/etc/a": "upper\n", "/srv/data/new": "n\n"}, "whiteouts": ["/etc/only-lower", "/etc/hostname"],
     "opaque": ["/srv/data"]},
]}

IMAGE_SCENARIO = """
id: img
title: an image scenario
tags: [overlay, rootfs]
control: [overlay]
image:
  layers:
    - files: {/etc/a: "lower\\n"}
    - files: {/etc/a: "upper\\n"}
run: cat /etc/a
expect: {exit: 0, stdout: upper}
"""


def _mounted(path) -> list[str]:
    return image.mounts_under(path)


@pytest.fixture
def overlay(tmp_path):
    """The two-layer image mounted on a real overlay in tmp_path; unmounted whatever the test does."""
    mounted = image.mount_image(image_spec.ImageSpec.from_yaml(TWO_LAYERS), tmp_path, tmp_path / "rootfs")
    yield mounted
    mounted.unmount()
    assert _mounted(tmp_path) == []


# -- the tarball ----------------------------------------------------------------------
def test_a_layer_is_an_oci_tarball_with_whiteout_entries_and_reproducible_bytes():
    layer = image_spec.ImageSpec.from_yaml(TWO_LAYERS).layers[1]
    tar = layer.tar()
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        members = {m.name: m for m in tf}
    assert set(members) == {"etc", "etc/a", "etc/.wh.only-lower", "etc/.wh.hostname", "srv", "srv/data",
                            "srv/data/.wh..wh..opq", "srv/data/new"}
    assert members["etc/.wh.hostname"].isreg() and members["etc/.wh.hostname"].size == 0
    assert members["srv/data"].isdir() and members["etc/a"].mtime == 0
    names = [m for m in members]
    assert names.index("srv") < names.index("srv/data") < names.index("srv/data/new")  # parents first
    assert layer.tar() == tar  # same description, same bytes, same digest
    other = image_spec.ImageSpec.from_yaml({"layers": [{"files": {"/etc/a": "upper!\n"}}]}).layers[0]
    assert other.tar() != tar


def test_file_modes_owners_dirs_and_symlinks_reach_the_tarball():
    layer = image_spec.Layer.from_yaml({"files": {"/bin/tool": {"content": "#!/bin/sh\n", "mode": "0755", "uid": 7}},
                                   "dirs": ["/empty", {"path": "/sticky", "mode": "1777"}],
                                   "symlinks": {"/bin/alias": "tool"}})
    with tarfile.open(fileobj=io.BytesIO(layer.tar())) as tf:
        m = {x.name: x for x in tf}
    assert (m["bin/tool"].mode, m["bin/tool"].uid) == (0o755, 7)
    assert m["empty"].isdir() and m["sticky"].mode == 0o1777
    assert m["bin/alias"].issym() and m["bin/alias"].linkname == "tool"


@pytest.mark.parametrize("layer, message", [
    ({"files": {"/a": "x"}, "whiteouts": ["/a"]}, "both adds and whites out /a"),
    ({"files": {"etc/a": "x"}}, "must be absolute"),
    ({"whiteouts": ["/etc/../a"]}, "must be absolute and normalised"),
    ({"files": {"/etc/.wh.a": "x"}}, "are whiteouts"),
    ({"files": {"/d": "x"}, "opaque": ["/d"]}, "made opaque but the same layer adds it as a file"),
])
def test_a_layer_that_cannot_be_a_tarball_is_refused(layer, message):
    with pytest.raises(image_spec.ImageError, match=message):
        image_spec.Layer.from_yaml(layer)


# -- unpacking, as the overlay snapshotter does ------------------------------------------
def test_unpacking_turns_whiteouts_into_0_0_char_devices_and_opaque_markers_into_the_xattr(tmp_path):
    tar = image_spec.ImageSpec.from_yaml(TWO_LAYERS).layers[1].tar()
    image.unpack(tar, tmp_path)
    for name in ("only-lower", "hostname"):
        st = os.lstat(tmp_path / "etc" / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert not any(n.startswith(".wh.") for n in os.listdir(tmp_path / "etc"))
    assert os.getxattr(tmp_path / "srv" / "data", image.OPAQUE_XATTR) == b"y"
    assert os.listdir(tmp_path / "srv" / "data") == ["new"]
    assert (tmp_path / "etc" / "a").read_text() == "upper\n"
    assert stat.S_IMODE(os.stat(tmp_path / "etc" / "a").st_mode) == 0o644


def test_an_entry_pointing_outside_the_layer_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        tf.addfile(tarfile.TarInfo("../escape"), io.BytesIO(b""))
    with pytest.raises(image_spec.ImageError, match="outside the layer"):
        image.unpack(buf.getvalue(), tmp_path / "layer")
    assert not (tmp_path / "escape").exists()


def test_unpacked_layers_are_cached_by_content_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tar = image_spec.Layer.from_yaml({"files": {"/x": "cached\n"}}).tar()
    first = image.layer_dir(tar)
    inode = os.stat(first / "x").st_ino
    assert first.name == "sha256-" + __import__("hashlib").sha256(tar).hexdigest()
    assert image.layer_dir(tar) == first and os.stat(first / "x").st_ino == inode  # not unpacked again
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging dir left


# -- the overlay ----------------------------------------------------------------------------
def test_the_overlay_merges_the_layers_as_the_image_spec_says(overlay):
    root = overlay.target
    assert [line.split()[4] for line in open("/proc/self/mountinfo") if " - overlay " in line
            and line.split()[4] == str(root)], "mounted as overlay"
    assert (root / "etc" / "a").read_text() == "upper\n"                   # the upper layer shadows
    assert not (root / "etc" / "only-lower").exists()                      # a whiteout hides a layer's file
    assert not (root / "etc" / "hostname").exists()                        # … and the base's
    assert sorted(os.listdir(root / "srv" / "data")) == ["new"]            # an opaque dir hides the lower entries
    assert sorted(os.listdir(root / "srv")) == ["data", "sibling"]         # a plain dir still merges
    assert (root / "bin" / "busybox").is_file()                            # the base is the lowest layer


def test_a_write_copies_up_and_leaves_the_layer_unchanged(overlay):
    v = {**overlay.variables(), "bundle": str(overlay.upper.parent)}
    with open(overlay.target / "etc" / "a", "a") as f:
        f.write("written\n")
    (overlay.target / "srv" / "sibling").unlink()
    assert image.read_layer_file("/etc/a", "upper", v) == "upper\nwritten\n"
    assert image.read_layer_file("/etc/a", "2", v) == "upper\n"
    assert image.read_layer_file("/srv/sibling", "upper", v) == "<whiteout>"
    assert image.read_layer_file("/srv/sibling", "image", v) == "s\n"   # what the next container sees
    assert image.read_layer_file("/srv/data", "2", v) == "<opaque directory>\nnew"
    assert image.read_layer_file("/etc/only-lower", "2", v) == "<whiteout>"
    assert image.read_layer_file("/nope", "1", v) == "<absent>"
    assert image.read_layer_file("/sbin", "1", v) == "<absent>"
    assert image.read_layer_file("/sbin", "image", v) == "<symlink> /bin"
    with pytest.raises(LookupError, match="the image has 2 layer"):
        image.read_layer_file("/etc/a", "3", v)
    assert _mounted(overlay.upper.parent) == [str(overlay.target)]  # the image view came and went


def test_a_layer_file_never_resolves_through_a_symlink_to_the_host(overlay):
    v = {**overlay.variables(), "bundle": str(overlay.upper.parent)}
    # /sbin -> /bin is absolute: resolved inside the image, never to the host's /bin
    assert image.read_layer_file("/sbin/busybox", "image", v).startswith("\x7fELF")
    assert image.read_layer_file("/usr/bin/sh", "image", v) == "<symlink> busybox"


def test_unmount_is_idempotent_and_takes_what_a_runtime_left_on_top(overlay):
    (overlay.target / "proc").mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "left-by-a-runtime", str(overlay.target / "proc")], check=True)
    overlay.unmount()
    overlay.unmount()
    assert _mounted(overlay.upper.parent) == []


# -- the bundle ------------------------------------------------------------------------------
def _scenario(tmp_path, body=IMAGE_SCENARIO):
    (sc,) = load_scenarios(write_scenarios(tmp_path / "sc", {"s.yaml": body}) / "s.yaml")
    return sc


def test_a_bundle_on_an_image_has_the_overlay_as_its_rootfs_and_removes_it(tmp_path):
    sc = _scenario(tmp_path, IMAGE_SCENARIO.replace("run: cat /etc/a", "run: [cat, '{{layer_1}}/etc/a', '{{upperdir}}']"))
    b = bundle.build(sc, "cf-img", tmp_path, "1.0.2-dev", {})
    try:
        assert b.config["process"]["args"] == ["cat", b.variables["layer_1"] + "/etc/a", str(b.path / "upper")]
        assert _mounted(b.path) == [str(b.path / "rootfs")]
        assert (b.rootfs / "etc" / "a").read_text() == "upper\n"
        assert json.loads((b.path / "config.json").read_text())["root"]["path"] == "rootfs"
        assert b.variables["upperdir"] == str(b.path / "upper")
        assert b.variables["layer_1"].endswith(image.layer_dir(sc.image.layers[0].tar()).name)
        assert b.variables["lowerdirs"].split(":")[-1] == b.variables["image_base"]
    finally:
        b.remove()
    assert _mounted(b.path) == [] and not b.path.exists()


def test_a_bundle_that_fails_after_the_mount_unmounts_it(tmp_path, monkeypatch):
    sc = _scenario(tmp_path, IMAGE_SCENARIO.replace("run: cat /etc/a", "run: cat {{nope}}"))
    with pytest.raises(placeholders.TemplateError):
        bundle.build(sc, "cf-bad", tmp_path, "1.0.2-dev", {})
    assert _mounted(tmp_path) == [] and not (tmp_path / "cf-bad").exists()

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(bundle, "make_config", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bundle.build(_scenario(tmp_path / "2"), "cf-int", tmp_path, "1.0.2-dev", {})
    assert _mounted(tmp_path) == [] and not (tmp_path / "cf-int").exists()


def test_closing_a_session_unmounts_an_overlay_left_in_its_workdir(tmp_path):
    session = RunSession()
    left = bundle.build(_scenario(tmp_path), "cf-left", session.workdir, "1.0.2-dev", {})
    workdir = session.workdir
    leftovers = session.close()
    assert leftovers == [f"mount {left.rootfs}"]
    assert _mounted(workdir) == [] and not workdir.exists()


# -- the scenario file ---------------------------------------------------------------------
@pytest.mark.parametrize("layer, message", [
    ("{files: {etc/a: x}}", "does not match"),
    ("{files: {/etc/a: {content: x, mode: 0755}}}", "is not valid under any of the given schemas|is not of type"),
    ("{whiteout: [/a]}", "unknown key 'whiteout'"),
    ("{}", "should be non-empty|does not have enough properties"),
    ("{files: {/a: x}, whiteouts: [/a]}", "both adds and whites out /a"),
])
def test_a_bad_image_is_reported_at_its_line(tmp_path, layer, message):
    body = IMAGE_SCENARIO.replace('    - files: {/etc/a: "upper\\n"}', f"    - {layer}")
    with pytest.raises(ScenarioError, match=message) as err:
        _scenario(tmp_path, body)
    assert err.value.line in range(6, 12), err.value


def test_every_overlay_scenario_names_the_image_it_needs_and_overlayfs():
    for path in sorted((REPO / "scenarios").glob("overlay-*.yaml")):
        for sc in load_scenarios(path):
            assert sc.image is not None and "overlayfs" in sc.requires and "overlay" in sc.tags, path


# -- end to end, on real runtimes -------------------------------------------------------------
def test_the_overlay_scenarios_pass_on_runc_and_crun_and_leave_no_mount(tmp_path, no_leftovers):
    run = run_suite(None, tmp_path / "out", "--runtime=runc,crun", "-m", "overlay")
    verdicts = run.verdicts()
    assert len(verdicts) >= 12 and set(verdicts.values()) == {"pass"}, run.output[-3000:]
    assert not [line for line in open("/proc/self/mountinfo") if f"oci-conformance-{SUITE_ENV['OCI_CONFORMANCE_TAG']}" in line]


def test_a_runtime_that_unmounts_the_rootfs_itself_does_not_upset_cleanup(tmp_path, no_leftovers):
    # ref without a mount namespace unmounts everything under the rootfs on delete, the overlay included
    sc = write_scenarios(tmp_path / "sc", {"m.yaml": IMAGE_SCENARIO.replace("control: [overlay]", "control: [mnt]")})
    run = run_suite(sc, tmp_path / "out", "--runtime=ref", "--controls")
    assert run.verdicts() == {("img", "ref"): "pass"}, run.output[-3000:]
    assert [c["verdict"] for c in run.matrix["controls"]] == ["pass"]  # mnt is no control for overlay


def test_a_timeout_and_ctrl_c_leave_no_overlay_mounted(tmp_path, no_leftovers):
    hang = IMAGE_SCENARIO.replace("run: cat /etc/a", "run: sleep 91").replace("expect:", "timeout: 1\nexpect:")
    run = run_suite(write_scenarios(tmp_path / "t", {"t.yaml": hang}), tmp_path / "out", "--runtime=runc")
    assert "did not finish within 1s" in run.result("img")["evidence"]
    proc = subprocess.Popen(suite_command(write_scenarios(tmp_path / "c", {"c.yaml": hang.replace("timeout: 1", "")}),
                                          tmp_path / "out2", "--runtime=runc"),
                            cwd=REPO, env=SUITE_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not any(x.startswith("mount") for x in host_leftovers()):  # our run's overlay (tag-scoped)
        assert time.monotonic() < deadline and proc.poll() is None, "the overlay was never mounted"
        time.sleep(0.05)
    time.sleep(0.5)  # the container is running by now; an interrupt at any moment must leave nothing
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert b"KeyboardInterrupt" in out
