"""The ``exec`` lifecycle step, without a runtime: what it hands the runtime, and how it judges.

runsc fchowns the stdio it is handed to its sandbox's user, so the step must
never give a runtime the host's /dev/null (it once did: this machine's
/dev/null became nobody's).
"""
from __future__ import annotations

from types import SimpleNamespace

from conformance.host.steps import run_step


class _FakeDriver:
    """exec_argv runs a shell that says what its stdin is, then the command's exit status."""

    def exec_argv(self, cid: str) -> list[str]:
        return ["sh", "-c", 'echo "stdin: $(readlink /proc/$$/fd/0)"; exec "$@"', "-"]


def _container() -> SimpleNamespace:
    return SimpleNamespace(driver=_FakeDriver(), cid="c", timeout=10)


def test_exec_hands_the_runtime_an_empty_pipe_not_dev_null(tmp_path):
    result = run_step({"exec": {"run": "true", "stdout": {"contains": "stdin: pipe:", "not_contains": "/dev/null"}}},
                      _container(), tmp_path / "stdout")
    assert result is not None and result.ok, result


def test_exec_judges_the_exit_and_the_output(tmp_path):
    failed = run_step({"exec": {"run": "exit 3"}}, _container(), tmp_path / "stdout")
    assert failed is not None and not failed.ok and "exit: expected 0, observed 3" in failed.detail
    expected = run_step({"exec": {"run": ["sh", "-c", "exit 3"], "exit": 3}}, _container(), tmp_path / "stdout")
    assert expected is not None and expected.ok, expected
