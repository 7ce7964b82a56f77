"""The state machine: create -> created -> start -> running -> stopped -> delete."""
import os

from conftest import reap


def test_create_start_kill_delete(ref):
    cid = ref.create(["sleep", "91"])
    st = ref.state(cid)
    assert st["status"] == "created" and st["pid"] > 0 and st["id"] == cid
    assert st["bundle"] == str(ref.bundle) and st["ociVersion"]
    pid = st["pid"]
    assert os.path.exists(f"/proc/{pid}")
    assert ref.cmd("start", cid).returncode == 0
    assert ref.state(cid)["status"] == "running"
    assert ref.cmd("kill", cid, "KILL").returncode == 0
    assert reap(pid) == 137
    assert ref.state(cid)["status"] == "stopped"
    assert ref.cmd("delete", cid).returncode == 0
    done = ref.cmd("state", cid)
    assert done.returncode != 0
    assert done.stderr.strip() == f'runtime-ref: container "{cid}" does not exist'


def test_init_exit_status_reaches_the_subreaper(ref):
    cid = ref.create(["sh", "-c", "exit 7"])
    pid = ref.state(cid)["pid"]
    ref.cmd("start", cid)
    assert reap(pid) == 7


def test_delete_running_needs_force(ref):
    cid = ref.create(["sleep", "91"])
    pid = ref.state(cid)["pid"]
    ref.cmd("start", cid)
    done = ref.cmd("delete", cid)
    assert done.returncode != 0 and "not stopped" in done.stderr
    assert ref.state(cid)["status"] == "running"
    assert ref.cmd("delete", "--force", cid).returncode == 0
    assert reap(pid) == 137


def test_delete_created_needs_force(ref):
    """runtime.md (delete): a container that is not stopped is not deleted (runc kills a created one)."""
    cid = ref.create(["sleep", "91"])
    pid = ref.state(cid)["pid"]
    assert ref.cmd("delete", cid).returncode != 0
    assert ref.cmd("delete", "--force", cid).returncode == 0
    assert reap(pid) == 137


def test_unknown_id(ref):
    for verb in (["state"], ["start"], ["kill"], ["delete"], ["exec"]):
        done = ref.cmd(*verb, "nope")
        assert done.returncode != 0
        assert done.stderr == 'runtime-ref: container "nope" does not exist\n', verb


def test_duplicate_create(ref):
    cid = ref.create(["sleep", "91"])
    done = ref.cmd("create", "--bundle", str(ref.bundle), cid)
    assert done.returncode != 0
    assert done.stderr == f'runtime-ref: container "{cid}" already exists\n'
    assert ref.state(cid)["status"] == "created"  # the first one is untouched


def test_start_twice(ref):
    cid = ref.create(["sleep", "91"])
    assert ref.cmd("start", cid).returncode == 0
    done = ref.cmd("start", cid)
    assert done.returncode != 0
    assert done.stderr == "runtime-ref: cannot start a container in state running\n"


def test_start_stopped(ref):
    cid = ref.create(["true"])
    pid = ref.state(cid)["pid"]
    ref.cmd("start", cid)
    reap(pid)
    done = ref.cmd("start", cid)
    assert "cannot start a container in state stopped" in done.stderr


def test_kill_signal_spellings(ref):
    cid = ref.create(["sleep", "91"])
    pid = ref.state(cid)["pid"]
    ref.cmd("start", cid)
    # pid 1 of a pid namespace ignores signals without a handler, except KILL
    for sig in ("TERM", "SIGTERM", "15", "usr1"):
        assert ref.cmd("kill", cid, sig).returncode == 0
    assert ref.state(cid)["status"] == "running"
    assert ref.cmd("kill", cid, "SIGBOGUS").returncode != 0
    assert ref.cmd("kill", cid, "9").returncode == 0
    assert reap(pid) == 137
    done = ref.cmd("kill", cid, "KILL")
    assert done.returncode != 0 and "not running" in done.stderr


def test_list_and_pid_file(ref, tmp_path):
    pid_file = tmp_path / "pid"
    cid = ref.new_id()
    ref.write_config(dict(ref.config, process=dict(ref.config["process"], args=["sleep", "91"])), cid)
    with open(tmp_path / "out", "w") as out:
        done = ref.cmd("create", "--bundle", str(ref.bundle), "--pid-file", str(pid_file), cid,
                       capture_output=False, stdout=out, stderr=out)
    assert done.returncode == 0, (tmp_path / "out").read_text()
    assert int(pid_file.read_text()) == ref.state(cid)["pid"]
    assert ref.cmd("list", "-q").stdout.split() == [cid]
    assert cid in ref.cmd("list").stdout


def test_annotations_in_state(ref):
    cfg = dict(ref.config, annotations={"org.example/a": "1"})
    cid = ref.create(["sleep", "91"], config=cfg)
    assert ref.state(cid)["annotations"] == {"org.example/a": "1"}


def test_version_and_features(ref):
    out = ref.cmd("--version").stdout.splitlines()
    assert out[0].startswith("runtime-ref version ") and out[1] == "spec: 1.0.2"
    import json
    feats = json.loads(ref.cmd("features").stdout)
    from runtime_ref.spec import SWITCHES
    assert feats["switches"] == list(SWITCHES)
    assert "pid" in feats["switches"] and "seccomp" in feats["switches"]


def test_spec_writes_a_runnable_config(ref, tmp_path):
    d = tmp_path / "specbundle"
    d.mkdir()
    assert ref.cmd("spec", "--bundle", str(d)).returncode == 0
    import json
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"] and cfg["root"]["path"] == "rootfs"
    assert ref.cmd("spec", "--bundle", str(d)).returncode != 0  # refuses to overwrite
