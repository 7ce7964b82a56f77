"""The runtime-spec's lifecycle MUSTs as runtime-ref keeps them, and the switch that breaks each.

runtime.md: delete, start and kill of a container that is not in the state
they need "MUST have no effect on the container and MUST generate an error";
state carries every field; a config changed after create changes nothing.
Plus runc's command line around them: --pid-file, run's clean-up, the id's
form, features, --log-format.
"""
from __future__ import annotations

import json

import pytest

from conftest import reap


def test_delete_of_a_created_container_needs_force(ref):
    cid = ref.create(["sleep", "91"])
    pid = ref.state(cid)["pid"]
    done = ref.cmd("delete", cid)
    assert done.returncode != 0 and "not stopped" in done.stderr
    assert ref.state(cid)["status"] == "created"
    assert ref.cmd("delete", cid, disable="delete-check").returncode == 0  # the switch: gone
    assert reap(pid) == 137


def test_start_of_a_stopped_container_fails_unless_start_check_is_off(ref):
    cid = ref.create(["true"])
    pid = ref.state(cid)["pid"]
    assert ref.cmd("start", cid).returncode == 0
    reap(pid)
    again = ref.cmd("start", cid)
    assert again.returncode != 0 and "state stopped" in again.stderr
    assert ref.cmd("start", cid, disable="start-check").returncode == 0


def test_kill_of_a_stopped_container_fails_unless_kill_check_is_off(ref):
    cid = ref.create(["sleep", "91"])
    pid = ref.state(cid)["pid"]
    assert ref.cmd("kill", cid, "KILL").returncode == 0  # a created container takes a signal
    assert reap(pid) == 137
    assert ref.cmd("kill", cid, "KILL").returncode != 0
    assert ref.cmd("kill", cid, "KILL", disable="kill-check").returncode == 0
    assert ref.state(cid)["status"] == "stopped"


def test_state_fields_and_the_switch_that_drops_them(ref):
    cfg = json.loads(json.dumps(ref.config))
    cfg["annotations"] = {"org.test": "yes"}
    cid = ref.create(["sleep", "91"], config=cfg)
    state = ref.state(cid)
    assert set(state) == {"ociVersion", "id", "status", "pid", "bundle", "annotations"}
    assert state["bundle"] == str(ref.bundle) and state["annotations"] == {"org.test": "yes"}
    bare = json.loads(ref.cmd("state", cid, disable="state-fields").stdout)
    assert set(bare) == {"status", "pid"}


def test_pid_file_switch_writes_none(ref, tmp_path):
    for disable, written in ((None, True), ("pid-file", False)):
        pid_file = tmp_path / f"pid-{disable}"
        cid = _create_with_pid_file(ref, pid_file, disable)
        assert pid_file.exists() is written
        if written:
            assert pid_file.read_text() == str(ref.state(cid)["pid"])
        ref.cmd("delete", "--force", cid)


def _create_with_pid_file(ref, pid_file, disable):
    cid = ref.new_id()
    ref.write_config(dict(ref.config, process=dict(ref.config["process"], args=["sleep", "91"])), cid)
    with open(ref.tmp / f"{cid}.out", "w") as out:
        done = ref.cmd("create", "--bundle", str(ref.bundle), "--pid-file", str(pid_file), cid,
                       disable=disable, capture_output=False, stdout=out, stderr=out)
    assert done.returncode == 0
    return cid


def test_start_uses_the_config_create_read_unless_reread_config(ref):
    for disable, ok in ((None, True), ("reread-config", False)):
        cid = ref.create(["true"], disable=disable)
        (ref.bundle / "config.json").write_text('{"ociVersion": "1.0.0"}')
        pid = ref.state(cid)["pid"]
        assert (ref.cmd("start", cid).returncode == 0) is ok
        ref.cmd("delete", "--force", cid)
        reap(pid)


def test_run_removes_the_container_unless_run_cleanup(ref):
    assert ref.run("true").returncode == 0
    assert ref.cmd("state", ref.ids[-1]).returncode != 0
    assert ref.run("true", disable="run-cleanup").returncode == 0
    assert ref.state(ref.ids[-1])["status"] == "stopped"


@pytest.mark.parametrize("cid", ["with space", "with:colon", "a/b", ".."])
def test_an_id_outside_runc_s_alphabet_is_refused(ref, cid):
    ref.write_config()
    done = ref.cmd("create", "--bundle", str(ref.bundle), cid)
    assert done.returncode != 0 and "invalid container id" in done.stderr


def test_id_check_switch_takes_a_space(ref):
    cid = f"{ref.tag} spaced"
    ref.ids.append(cid)
    ref.write_config(dict(ref.config, process=dict(ref.config["process"], args=["sleep", "91"])))
    with open(ref.tmp / "spaced.out", "w") as out:
        done = ref.cmd("create", "--bundle", str(ref.bundle), cid, disable="id-check",
                       capture_output=False, stdout=out, stderr=out)
    assert done.returncode == 0
    assert ref.cmd("delete", "--force", cid).returncode == 0


def test_features_switch_empties_the_document(ref):
    full = json.loads(ref.cmd("features").stdout)
    assert "namespaces" in full["linux"] and "createRuntime" in full["hooks"]
    assert json.loads(ref.cmd("features", disable="features").stdout) == {}


def test_log_format_switch_writes_text(ref, tmp_path):
    for disable, json_lines in ((None, True), ("log-format", False)):
        log = tmp_path / f"log-{disable}"
        ref.cmd("--log", str(log), "--log-format", "json", "state", "nope", disable=disable)
        line = log.read_text().splitlines()[0]
        assert line.startswith("{") is json_lines, line
