"""The rootless lane's one place of config changes (host/rootless_config.py), rule by rule.

No runtime and no user are needed: a RootlessUser is plain data.  What each
rule does is pinned here; that a runtime then runs such a config as an
unprivileged user is tests/test_rootless.py's.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from conformance.host.base_spec import base_spec
from conformance.host.bundle import LaneNeeds, named_host_ids, root_host_ids
from conformance.host.rootless_cgroup import Delegation
from conformance.host.rootless_config import RULES, RootlessTarget, Unrepresentable, adapt, rules_for
from conformance.host.rootless_user import IdRange, RootlessUser

USER = RootlessUser("oci-conformance-1-1", 1234, 2345, Path("/run/x"), IdRange(200000, 65536),
                    IdRange(300000, 65536), made=True)
NO_RANGES = RootlessUser("someone", 1234, 2345, Path("/run/x"), None, None, made=False)


def _config() -> dict:
    config = base_spec()
    config["linux"]["cgroupsPath"] = "/cf-abc"
    return config


def test_a_user_namespace_maps_root_to_the_user_and_the_rest_to_its_ranges():
    config = _config()
    applied = adapt(config, RootlessTarget(USER, None))
    assert {"type": "user"} in config["linux"]["namespaces"]
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1234, "size": 1},
                                             {"containerID": 1, "hostID": 200000, "size": 65535}]
    assert config["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 2345, "size": 1},
                                             {"containerID": 1, "hostID": 300000, "size": 65535}]
    assert applied[:2] == ["userns", "sub-ids"]
    assert root_host_ids(config) == {"root_host_uid": "1234", "root_host_gid": "2345"}


def test_a_user_without_ranges_maps_only_itself_and_cannot_run_other_ids():
    config = _config()
    assert "own-ids" in adapt(config, RootlessTarget(NO_RANGES, None))
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1234, "size": 1}]
    other = _config()
    other["process"]["user"] = {"uid": 4242, "gid": 4242}
    with pytest.raises(Unrepresentable, match=r"uids \[4242\] besides root.*someone has none in /etc/subuid"):
        adapt(other, RootlessTarget(NO_RANGES, None))


def test_a_scenarios_own_maps_move_into_the_users_range():
    config = _config()
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 1000},
                                      {"containerID": 1000, "hostID": 500000, "size": 10}]
    applied = adapt(config, RootlessTarget(USER, None))
    assert "userns" not in applied and "moved-maps" in applied
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 200000, "size": 65536}]
    assert config["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 300000, "size": 1000},
                                             {"containerID": 1000, "hostID": 301000, "size": 10}]
    assert root_host_ids(config) == {"root_host_uid": "200000", "root_host_gid": "300000"}
    too_big = _config()
    too_big["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 70000}]
    with pytest.raises(Unrepresentable, match="maps 70000 uids"):
        adapt(too_big, RootlessTarget(USER, None))


def test_a_namespace_of_roots_cannot_be_joined():
    config = _config()
    config["linux"]["namespaces"] = [{"type": "network", "path": "/run/netns/x"}]
    with pytest.raises(Unrepresentable, match="joins the network namespace /run/netns/x"):
        adapt(config, RootlessTarget(USER, None))


def test_cgroups_path_is_dropped_or_moved_into_the_delegated_subtree():
    config = _config()
    config["linux"]["resources"]["memory"] = {"limit": 1 << 25}
    assert "no-cgroups-path" in adapt(config, RootlessTarget(USER, None))
    assert "cgroupsPath" not in config["linux"]
    assert config["linux"]["resources"]["memory"] == {"limit": 1 << 25}, "limits stay: what a runtime does is the finding"
    delegated = _config()
    target = RootlessTarget(USER, Delegation(Path("/sys/fs/cgroup/oci-conformance-1-1"), ("memory",)))
    assert "cgroups-delegated" in adapt(delegated, target)
    assert delegated["linux"]["cgroupsPath"] == "/oci-conformance-1-1/cf-abc"


def test_mount_ids_outside_the_map_are_dropped_and_sysfs_is_bound_without_a_netns():
    config = _config()
    config["mounts"].append({"destination": "/x", "type": "tmpfs", "source": "tmpfs",
                             "options": ["uid=70000", "gid=5", "mode=755"]})
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"]
    applied = adapt(config, RootlessTarget(USER, None))
    assert config["mounts"][-1]["options"] == ["gid=5", "mode=755"]
    sysfs = next(m for m in config["mounts"] if m["destination"] == "/sys")
    assert sysfs["type"] == "none" and sysfs["source"] == "/sys" and "rbind" in sysfs["options"]
    assert {"mount-ids", "sysfs-bind"} <= set(applied)


def test_a_runtime_that_makes_its_own_user_namespace_gets_none():
    config = _config()
    assert adapt(config, RootlessTarget(USER, None, runtime_makes_userns=True)) == ["runtime-userns",
                                                                                  "no-cgroups-path"]
    assert not any(ns["type"] == "user" for ns in config["linux"]["namespaces"])
    assert root_host_ids(config) == {"root_host_uid": "0", "root_host_gid": "0"}


def test_the_matrix_lists_the_rules_that_can_apply():
    assert rules_for(True, False) == [RULES["runtime-userns"], RULES["no-cgroups-path"]]
    listed = rules_for(False, True)
    assert RULES["sub-ids"] in listed and RULES["cgroups-delegated"] in listed
    assert RULES["runtime-userns"] not in listed and RULES["no-cgroups-path"] not in listed


def test_proc_and_mqueue_follow_the_host_namespaces_the_lane_leaves_shared(monkeypatch):
    monkeypatch.setattr("conformance.host.rootless_config.posixpath.ismount", lambda path: path == "/dev/mqueue")
    config = _config()
    config["linux"]["namespaces"] = [{"type": "mount"}]
    applied = adapt(config, RootlessTarget(USER, None))
    by_dest = {m["destination"]: m for m in config["mounts"]}
    assert by_dest["/proc"]["source"] == "/proc" and "rbind" in by_dest["/proc"]["options"]
    assert by_dest["/dev/mqueue"]["source"] == "/dev/mqueue" and by_dest["/dev/mqueue"]["type"] == "none"
    assert {"proc-bind", "mqueue-host", "sysfs-bind"} <= set(applied)
    monkeypatch.setattr("conformance.host.rootless_config.posixpath.ismount", lambda path: False)
    bare = _config()
    bare["linux"]["namespaces"] = [{"type": "mount"}]
    adapt(bare, RootlessTarget(USER, None))
    assert not any(m["destination"] == "/dev/mqueue" for m in bare["mounts"]), "no host mqueue: none bound"
    own = _config()
    adapt(own, RootlessTarget(USER, None))
    assert {m["destination"]: m["type"] for m in own["mounts"]}["/proc"] == "proc", "own pid namespace: proc kept"


def test_a_scenarios_own_user_namespace_is_the_runtimes_to_handle():
    """Without maps it stays without (a runtime must refuse it); without a netns its sysfs stays sysfs."""
    config = _config()
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"]
    config["linux"]["namespaces"].append({"type": "user"})
    adapt(config, RootlessTarget(USER, None))
    assert "uidMappings" not in config["linux"] and "gidMappings" not in config["linux"]
    assert next(m for m in config["mounts"] if m["destination"] == "/sys")["type"] == "sysfs"


def test_host_ids_name_where_each_mapped_container_id_went():
    config = _config()
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 1000},
                                      {"containerID": 1000, "hostID": 300000, "size": 1000}]
    config["linux"]["gidMappings"] = config["linux"]["uidMappings"]
    config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [1, 2]}
    adapt(config, RootlessTarget(USER, None))
    ids = named_host_ids(config)
    assert ids["host_uid_0"] == "200000" and ids["host_uid_1000"] == "201000"
    assert ids["host_gid_1"] == "300001" and ids["host_gid_2"] == "300002" and ids["host_gid_1000"] == "301000"
    assert named_host_ids(_config())["host_uid_0"] == "0", "no user namespace: the ids are the host's"


def test_a_refusal_of_limits_without_a_cgroup_is_a_skip_and_nothing_else_is():
    lane = LaneNeeds(no_cgroup="none delegated")
    limited = {"linux": {"resources": {"memory": {"limit": 1 << 25}, "devices": [{"allow": False}]}}}
    said = "runc create failed: cannot set memory limit: container could not join or create cgroup"
    assert "refused the limits (memory)" in (lane.excused(limited, said) or "")
    assert said in (lane.excused(limited, said) or "")
    assert lane.excused(limited, 'Rootless mode not supported with "create"') is None, "not about limits"
    assert lane.excused({"linux": {"resources": {"devices": [{"allow": False}]}}}, said) is None
    assert lane.excused(limited, None) is None
    assert LaneNeeds().excused(limited, said) is None, "a lane with cgroups: a refusal is an error"


def test_a_cgroup_step_without_a_cgroup_is_not_judged():
    from conformance.host.steps import _cgroup
    result = _cgroup("absent", {"cgroups_path": "", "no_cgroup": "none delegated"})
    assert result.sandbox and "none delegated" in result.detail
    assert _cgroup("absent", {"cgroups_path": ""}).sandbox is None, "without the lane's reason: a failed check"


def test_a_runtime_that_runs_no_container_rootless_gives_errors_not_passes(monkeypatch):
    """runsc refuses ``create`` rootless: a scenario that expects create to fail must not pass on that."""
    from conformance.host import executor
    from conformance.model.records import SandboxProbe
    from conformance.model.scenario import Expectations, Scenario

    class Driver:
        label = "x:rootless"
        bundle_needs = LaneNeeds(probe_must_run=True)

        def unsupported(self, scenario):
            return None  # the lane expresses every scenario (the base class's answer)

    class Session:
        workdir = Path("/nonexistent")

        def driver(self, runtime, disabled):
            return Driver()

        def new_container_id(self):
            return "cf-x"

        def take_ahead(self):
            return None  # no bundle written ahead (host/ahead.py)

        def sandbox(self, runtime, timeout):
            return SandboxProbe(False, "not determined (the probe container did not run: x create failed (exit 128): "
                                       "Rootless mode not supported); host facts are judged as the container's", ran=False)

    spec = Scenario(id="s", title="s", tags=(), controls=(), args=("true",), expect=Expectations(),
                    path=Path("<t>"), line=0)
    done = executor.execute(spec, "x:rootless", (), Session())  # type: ignore[arg-type]
    assert done.error and "Rootless mode not supported" in done.error and "host facts" not in done.error


def test_the_console_socket_is_the_bundle_owners(tmp_path):
    """A runtime run by the bundle's owner (the rootless lane's user) may connect to its console socket."""
    from conformance.host.console import console_socket
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    os.chown(bundle, 4321, 4321)
    with console_socket(bundle) as receiver:
        sock = Path(receiver.path)
        assert (sock.stat().st_uid, sock.parent.stat().st_uid) == (4321, 4321)
