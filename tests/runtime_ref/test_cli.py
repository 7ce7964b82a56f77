"""The command line refuses what it does not know, in runc's words and with runc's exit status.

Regression (issue 16, bug 8): `list --bogus-flag` exited 0, `--log-format=invalid`
and `--log=invalid:/path` were accepted, `spec --rootless` ignored its flag.
"""
from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize("args,status,words", [
    (["list", "--bogus-flag"], 1, "flag provided but not defined: --bogus-flag"),
    (["--bogus-global", "list"], 1, "flag provided but not defined: --bogus-global"),
    (["state", "--all", "x"], 1, "flag provided but not defined: --all"),
    (["bogus-verb"], 3, "unknown verb 'bogus-verb'"),
    (["--log-format=invalid", "list"], 1, "invalid value 'invalid' for --log-format"),
    (["--log=/no/such/dir/log", "list"], 1, "cannot open log file /no/such/dir/log"),
    (["list", "--format", "yaml"], 1, "invalid value 'yaml' for --format"),
    (["--rootless=true", "list"], 1, "--rootless=true is not supported"),
    (["exec", "--console-socket", "/x", "c1", "true"], 1, "flag --console-socket is not supported"),
    (["create", "--preserve-fds", "many", "c1"], 1, "invalid value 'many' for --preserve-fds"),
    (["update", "--kernel-memory", "1", "c1"], 1, "kernel memory limits are gone"),
    (["kill", "--force", "c1"], 1, "flag provided but not defined: --force"),
])
def test_bad_input_is_an_error_naming_it(ref, args, status, words):
    done = ref.cmd(*args)
    assert done.returncode == status, done
    assert done.stderr.startswith("runtime-ref: ") and words in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1  # one line


def test_a_bad_log_path_is_refused_before_the_verb_runs(ref):
    done = ref.cmd("--log=invalid:/path", "list")
    assert done.returncode == 1 and "cannot open log file invalid:/path" in done.stderr


def test_errors_go_to_the_log_in_its_format(ref, tmp_path):
    log = tmp_path / "log.json"
    done = ref.cmd("--log", str(log), "--log-format", "json", "state", "nope")
    assert done.returncode == 1
    entry = json.loads(log.read_text())
    assert entry["level"] == "error" and entry["msg"] == 'container "nope" does not exist'
    ref.cmd("--log", str(log), "--debug", "list")
    assert "level=debug msg=runtime-ref list" in log.read_text()


def test_known_flags_and_their_short_forms_still_work(ref):
    assert ref.cmd("list", "-q").returncode == 0
    assert ref.cmd("list", "-f", "json").stdout.strip() == "[]"
    assert ref.cmd("--rootless", "auto", "--log-format=text", "list", "--quiet=true").returncode == 0


def test_spec_rootless_is_runc_s(ref, tmp_path):
    """`spec --rootless`: a user namespace mapping the caller, no network namespace, /sys bound."""
    done = ref.cmd("spec", "--rootless", "--bundle", str(tmp_path))
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "config.json").read_text())
    types = [ns["type"] for ns in config["linux"]["namespaces"]]
    assert "user" in types and "network" not in types
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 0, "size": 1}]
    assert "resources" not in config["linux"]
    sys_mount = next(m for m in config["mounts"] if m["destination"] == "/sys")
    assert sys_mount["source"] == "/sys" and "rbind" in sys_mount["options"]
    assert ref.cmd("spec", "--bundle", str(tmp_path / "plain")).returncode != 0  # no such directory


def test_cli_checks_switch_takes_it_all(ref):
    """The negative control of the CLI scenarios: what must be refused passes silently."""
    for args in (["list", "--bogus-flag"], ["bogus-verb"], ["--log-format=invalid", "list"],
                 ["state", "never-created"]):
        done = ref.cmd(*args, disable="cli-checks")
        assert done.returncode == 0, (args, done.stderr)
    assert json.loads(ref.cmd("state", "never-created", disable="cli-checks").stdout)["status"] == "stopped"
