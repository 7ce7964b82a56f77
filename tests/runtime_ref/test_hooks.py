"""Hooks: the environment a hook gets, and what a failing poststart hook may do.

Regression (issue 16, bug 6): a hook without ``env`` got an empty environment,
where runc and crun give it the runtime's.
"""
from __future__ import annotations

import json
import time

from conftest import reap


def _hook(kind, shell, env=None):
    def patch(cfg):
        hook = {"path": "/bin/sh", "args": ["sh", "-c", shell]}
        if env is not None:
            hook["env"] = env
        cfg.setdefault("hooks", {})[kind] = [hook]
    return patch


def test_a_hook_without_env_gets_the_runtime_s(ref, tmp_path):
    out = tmp_path / "env"
    done = ref.run("true", patch=_hook("prestart", f"env > {out}"), env={"HOOK_PROBE": "from-the-runtime"})
    assert done.returncode == 0, done.stderr
    assert "HOOK_PROBE=from-the-runtime" in out.read_text().splitlines()


def test_a_hook_with_env_gets_exactly_it(ref, tmp_path):
    out = tmp_path / "env"
    ref.run("true", patch=_hook("poststop", f"env > {out}", env=["ONLY=this"]), env={"HOOK_PROBE": "x"})
    assert "ONLY=this" in out.read_text() and "HOOK_PROBE" not in out.read_text()
    ref.run("true", patch=_hook("poststop", f"env > {out}", env=[]), env={"HOOK_PROBE": "x"})
    assert "HOOK_PROBE" not in out.read_text()


def test_hook_env_switch_empties_it(ref, tmp_path):
    out = tmp_path / "env"
    ref.run("true", patch=_hook("prestart", f"env > {out}"), env={"HOOK_PROBE": "x"}, disable="hook-env")
    assert "HOOK_PROBE" not in out.read_text() and "PATH=" not in out.read_text()


def _poststart_fails(ref, disable=None):
    cfg = json.loads(json.dumps(ref.config))
    _hook("poststart", "echo hook-said-no >&2; exit 3")(cfg)
    cid = ref.create(["sleep", "91"], config=cfg, disable=disable)
    pid = ref.state(cid)["pid"]
    return cid, pid, ref.cmd("start", cid)


def test_a_failing_poststart_hook_is_a_warning_and_the_container_runs(ref):
    """runtime.md, lifecycle step 7: the runtime MUST log a warning, the lifecycle continues."""
    cid, pid, started = _poststart_fails(ref)
    assert started.returncode == 0
    assert "warning: poststart hook #0 (/bin/sh) failed: exit status 3: hook-said-no" in started.stderr
    assert ref.state(cid)["status"] == "running"
    ref.cmd("delete", "--force", cid)
    assert reap(pid) == 137


def test_poststart_warning_switch_makes_it_fatal(ref):
    cid, pid, started = _poststart_fails(ref, disable="poststart-warning")
    assert started.returncode == 1 and "poststart hook #0" in started.stderr
    assert reap(pid) == 137
    deadline = time.monotonic() + 5
    while ref.state(cid)["status"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ref.state(cid)["status"] == "stopped"


def test_from_runtime_spec_1_3_a_failing_poststart_hook_stops_the_container(ref):
    """runtime-spec 1.3.0 turned the rule around (an error, and the container stopped);
    the config's ociVersion says which rule holds."""
    cfg = json.loads(json.dumps(ref.config))
    cfg["ociVersion"] = "1.3.0"
    _hook("poststart", "exit 3")(cfg)
    cid = ref.create(["sleep", "91"], config=cfg)
    pid = ref.state(cid)["pid"]
    started = ref.cmd("start", cid)
    assert started.returncode == 1 and "poststart hook #0" in started.stderr
    assert reap(pid) == 137
