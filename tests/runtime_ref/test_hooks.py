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


def _log_hooks(log, kinds, n=2):
    """n hooks of each kind, each appending KIND<i> to ``log``."""
    def patch(cfg):
        cfg["hooks"] = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", f"echo {kind}{i} >> {log}"]}
                               for i in range(1, n + 1)] for kind in kinds}
    return patch


def test_hooks_run_in_order_and_hook_order_reverses_them(ref, tmp_path):
    log = tmp_path / "log"
    ref.run("true", patch=_log_hooks(log, ["prestart", "poststop"]))
    assert log.read_text().split() == ["prestart1", "prestart2", "poststop1", "poststop2"]
    log.unlink()
    ref.run("true", patch=_log_hooks(log, ["prestart", "poststop"]), disable="hook-order")
    assert log.read_text().split() == ["prestart2", "prestart1", "poststop2", "poststop1"]


def test_hook_state_switch_leaves_only_id_and_status(ref, tmp_path):
    out = tmp_path / "hook-stdin"
    for disable, keys in ((None, {"ociVersion", "id", "status", "pid", "bundle", "annotations"}),
                          ("hook-state", {"id", "status"})):
        ref.run("true", patch=_hook("createRuntime", f"cat > {out}"), disable=disable)
        assert set(json.loads(out.read_text())) == keys


def test_container_side_hooks_get_the_init_s_host_pid(ref, tmp_path):
    out = tmp_path / "hook-stdin"
    cfg = json.loads(json.dumps(ref.config))
    _hook("createContainer", f"cat > {out}")(cfg)
    cid = ref.create(["sleep", "91"], config=cfg)
    assert json.loads(out.read_text())["pid"] == ref.state(cid)["pid"]


def test_hook_namespace_switch_runs_container_hooks_on_the_host(ref, tmp_path):
    out = tmp_path / "ns"
    import os
    host = os.readlink("/proc/self/ns/mnt")
    for disable, on_host in ((None, False), ("hook-namespace", True)):
        ref.run("true", patch=_hook("createContainer", f"readlink /proc/self/ns/mnt > {out}"), disable=disable)
        assert (out.read_text().strip() == host) is on_host


def test_hook_args_switch_hands_the_path_as_argv0_and_the_runtime_s_env(ref, tmp_path):
    out = tmp_path / "argv"
    def patch(cfg):
        cfg["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["argv0", "-c", f'echo "$0 $HOOK_PROBE" > {out}'],
                                      "env": ["PATH=/bin"]}]}
    ref.run("true", patch=patch, env={"HOOK_PROBE": "leaked"})
    assert out.read_text().split() == ["argv0"]
    ref.run("true", patch=patch, env={"HOOK_PROBE": "leaked"}, disable="hook-args")
    assert out.read_text().split() == ["/bin/sh", "leaked"]


def test_a_hook_past_its_timeout_fails_create_unless_hook_timeout(ref):
    def patch(cfg):
        cfg["hooks"] = {"prestart": [{"path": "/bin/sleep", "args": ["sleep", "2"], "timeout": 1}]}
    late = ref.run("true", patch=patch)
    assert late.returncode != 0 and "timed out after 1s" in late.stderr
    assert ref.run("true", patch=patch, disable="hook-timeout").returncode == 0


def test_a_failing_poststop_hook_is_a_warning_unless_poststop_warning(ref, tmp_path):
    log = tmp_path / "after"
    def patch(cfg):
        cfg["hooks"] = {"poststop": [{"path": "/bin/false"},
                                     {"path": "/bin/sh", "args": ["sh", "-c", f"echo after >> {log}"]}]}
    for disable, ok in ((None, True), ("poststop-warning", False)):
        cid = ref.create(["true"], config=_patched(ref, patch), disable=disable)
        pid = ref.state(cid)["pid"]
        ref.cmd("start", cid)
        reap(pid)
        done = ref.cmd("delete", cid)
        assert (done.returncode == 0) is ok, done.stderr
        assert ref.cmd("state", cid).returncode != 0  # gone either way
        assert log.exists() is ok
        log.unlink(missing_ok=True)


def _patched(ref, patch):
    cfg = json.loads(json.dumps(ref.config))
    patch(cfg)
    return cfg


#: annotations that make the state on a hook's stdin larger than a pipe holds (64 KiB): the runtime's
#: write of it waits for the hook to read, so a hook that closes its stdin meets it mid-write
BIG_ANNOTATIONS = {f"org.conformance.pad.{i:02d}": "x" * 4096 for i in range(32)}


def _closes_stdin_then_succeeds(ref, log):
    """A poststart hook that closes its stdin unread and succeeds, then one that appends to ``log``."""
    cfg = json.loads(json.dumps(ref.config))
    cfg["annotations"] = dict(BIG_ANNOTATIONS)
    cfg["hooks"] = {"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", "exec 0<&-; sleep 0.05"]},
                                  {"path": "/bin/sh", "args": ["sh", "-c", f"cat >/dev/null; echo after >> {log}"]}]}
    return cfg


def test_a_hook_that_closes_its_stdin_unread_does_not_stop_the_runtime(ref, tmp_path):
    """The write of the state fails with EPIPE; the hook succeeded, so start and the later hooks go on."""
    log = tmp_path / "after"
    cid = ref.create(["sleep", "91"], config=_closes_stdin_then_succeeds(ref, log))
    pid = ref.state(cid)["pid"]
    started = ref.cmd("start", cid)
    assert started.returncode == 0, started.stderr
    assert log.read_text() == "after\n"
    assert ref.state(cid)["status"] == "running"
    ref.cmd("delete", "--force", cid)
    assert reap(pid) == 137


def test_hook_sigpipe_switch_lets_sigpipe_kill_the_runtime(ref, tmp_path):
    """As crun 1.8.1 in start: SIGPIPE kills the runtime mid-verb, and the next hook never runs."""
    log = tmp_path / "after"
    cid = ref.create(["sleep", "91"], config=_closes_stdin_then_succeeds(ref, log), disable="hook-sigpipe")
    pid = ref.state(cid)["pid"]
    started = ref.cmd("start", cid)
    assert started.returncode == -13, (started.returncode, started.stderr)
    assert not log.exists()
    ref.cmd("delete", "--force", cid)
    assert reap(pid) == 137
