"""The ``exec`` lifecycle step, without a runtime: what it hands the runtime, and how it judges.

runsc fchowns the stdio it is handed to its sandbox's user, so the step must
never give a runtime the host's /dev/null (it once did: this machine's
/dev/null became nobody's).
"""
from __future__ import annotations

from types import SimpleNamespace

from conformance.host.steps import refused_create, run_step
from conformance.model.records import StepResult


class _FakeDriver:
    """exec_argv runs a shell that says what its stdin is, then the command's exit status."""

    def exec_argv(self, cid: str, flags: tuple[str, ...] = ()) -> list[str]:
        return ["sh", "-c", 'echo "stdin: $(readlink /proc/$$/fd/0)"; exec "$@"', "-"]


def _container() -> SimpleNamespace:
    return SimpleNamespace(driver=_FakeDriver(), cid="c", timeout=10, pid=None)


def test_exec_hands_the_runtime_an_empty_pipe_not_dev_null(tmp_path):
    result = run_step({"exec": {"run": "true", "stdout": {"contains": "stdin: pipe:", "not_contains": "/dev/null"}}},
                      _container(), tmp_path / "stdout")
    assert result is not None and result.ok, result


def test_exec_judges_the_exit_and_the_output(tmp_path):
    failed = run_step({"exec": {"run": "exit 3"}}, _container(), tmp_path / "stdout")
    assert failed is not None and not failed.ok and "exit: expected 0, observed 3" in failed.detail
    expected = run_step({"exec": {"run": ["sh", "-c", "exit 3"], "exit": 3}}, _container(), tmp_path / "stdout")
    assert expected is not None and expected.ok, expected


def test_a_create_step_the_runtime_refused_is_an_error_of_its_set_up():
    """A scenario whose ``create`` must succeed never had a container when the runtime refused it: the
    refusal becomes the observation's runtime error (verdict ``error``), unless the step expects it."""
    refused = StepResult("create", False, "create: expected to succeed, exit 1 (x create failed (exit 128): no)", 0)
    assert refused_create(["create", "start"], [refused]) == refused.detail
    assert refused_create([{"create": "fails"}], [StepResult("create", False, "create: expected to fail", 0)]) is None
    assert refused_create(["create", "start"], [StepResult("start", False, "start: …", 1)]) is None


class _FlagsDriver:
    """exec_argv prints the flags it was given, then runs the command."""

    sandboxed = None

    def exec_argv(self, cid: str, flags: tuple[str, ...] = ()) -> list[str]:
        return ["sh", "-c", 'echo "flags: $0"; shift; exec "$@"', " ".join(flags), "-"]


def test_exec_hands_the_runtime_its_own_flags_before_the_id(tmp_path):
    container = SimpleNamespace(driver=_FlagsDriver(), cid="c", timeout=10, pid=None)
    step = {"exec": {"run": "true", "user": "1000:1000", "env": ["A=b"], "cwd": "/tmp", "cap": ["CAP_KILL"],
                     "additional_gids": [10], "no_new_privs": True,
                     "stdout": "flags: --user 1000:1000 --env A=b --cwd /tmp --cap CAP_KILL --additional-gids 10 "
                               "--no-new-privs"}}
    result = run_step(step, container, tmp_path / "stdout")
    assert result is not None and result.ok, result
    fails = run_step({"exec": {"run": "exit 3", "fails": True}}, container, tmp_path / "stdout")
    assert fails is not None and fails.ok, fails


class _LikeInitDriver:
    """exec_argv writes the pid file exec --pid-file names, then runs the command where we are."""

    sandboxed = None

    def exec_argv(self, cid: str, flags: tuple[str, ...] = ()) -> list[str]:
        pid_file = flags[flags.index("--pid-file") + 1]
        return ["sh", "-c", f'echo $$ > {pid_file}; exec /bin/busybox "$@"', "-"]


def test_like_init_compares_the_exec_d_process_with_the_init_from_the_host(tmp_path):
    import subprocess
    for init_argv, same in ((["/bin/busybox", "sh", "-c", "read _"], True),
                            (["/bin/busybox", "setpriv", "--nnp", "/bin/busybox", "sh", "-c", "read _"], False)):
        init = subprocess.Popen(init_argv, stdin=subprocess.PIPE)
        try:
            container = SimpleNamespace(driver=_LikeInitDriver(), cid="c", timeout=10, pid=init.pid)
            result = run_step({"exec": {"run": ["sh", "-c", "read _"], "like_init": ["namespaces", "credentials"]}},
                              container, tmp_path / "stdout")
        finally:
            init.communicate(b"")
        assert result is not None and result.ok is same, result
        assert ("NoNewPrivs: init '1', exec '0'" in result.detail) is not same, result.detail
