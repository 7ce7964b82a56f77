"""Lifecycle scenarios: drive the runtime verb by verb and check each answer.

The runtime-spec's lifecycle (runtime.md) is a contract on the command line
itself: ``create`` leaves the container "created" with a pid and the
entrypoint not yet run, ``start`` makes it "running", its exit makes it
"stopped", ``delete`` forgets it; ``kill`` delivers a signal; an unknown id,
a duplicate id or a second start are errors.  A scenario lists ``steps``;
each becomes one checked line of evidence.

Steps (strings or one-key mappings):
  create | create: fails        start | start: fails        delete | delete: fails
  kill: SIGNAL                  state: created|running|stopped|absent
  exec: {run: CMD, stdout: <text>, exit: N}   (a process through the runtime's exec; exit 0 by default)
  release   (end the entrypoint's stdin: a ``read _`` returns)
  wait      (the entrypoint's exit status becomes the scenario's ``exit``)
  stdout: <text expectation>   (what the entrypoint has written so far)

Each step is one verb of ``lifecycle.Container`` or of its driver, the same
ones every other path uses; ``wait`` kills the container past the timeout,
and ``lifecycle.held`` deletes it after the last step, however the steps end.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from conformance.model.errors import DriverError
from conformance.model.matchers import text_failures
from conformance.model.records import StepResult
from conformance.model.scenario import TextExpectation

from .drivers import VerbFailed
from .drivers.procs import empty_stdin
from .lifecycle import Container

STATE_SETTLE_S = 2.0  # a "stopped" state may lag the exit by a moment
OUTPUT_SETTLE_S = 3.0  # how long a stdout step waits for the entrypoint to print


def parse(step: Any) -> tuple[str, Any]:
    if isinstance(step, str):
        return step, None
    (verb, arg), = step.items()
    return verb, arg


def _answer(verb: Callable[[], Any]) -> tuple[int, str]:
    """(exit status, the runtime's last words) of a verb; a refusal is an answer, not an error."""
    try:
        verb()
    except VerbFailed as exc:
        return exc.exit, exc.output[-200:]
    return 0, ""


def _expect_rc(name: str, rc: int, message: str, fails: bool) -> StepResult:
    ok = (rc != 0) if fails else (rc == 0)
    want = "to fail" if fails else "to succeed"
    return StepResult(name, ok, f"{name}: expected {want}, exit {rc}" + (f" ({message})" if message else ""))


def _create(container: Container, fails: bool) -> StepResult:
    try:
        container.create()
    except DriverError as exc:  # a refusal, or a create that never returned
        return _expect_rc("create", 1, str(exc)[-200:], fails)
    return _expect_rc("create", 0, "", fails)


def _state(container: Container, want: str) -> StepResult:
    """One ``state`` call per poll; polls only while a "stopped" may still lag the exit."""
    name = f"state {want}"
    deadline = time.monotonic() + (STATE_SETTLE_S if want == "stopped" else 0)
    while True:
        try:
            answer, refusal = container.driver.state(container.cid), None
        except VerbFailed as exc:
            answer, refusal = {}, exc
        if want == "absent":
            return StepResult(name, refusal is not None, f"{name}: state of a deleted/unknown id "
                              + ("failed as it must" if refusal is not None else "still answers"))
        if (refusal is None and answer.get("status") == want) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if refusal is not None:
        return StepResult(name, False, f"{name}: state failed: {refusal.output[-200:]}")
    pid_ok = want not in ("created", "running") or int(answer.get("pid") or 0) > 0
    ok = answer.get("status") == want and pid_ok
    return StepResult(name, ok, f"{name}: observed status {answer.get('status')!r}, pid {answer.get('pid')}")


def _stdout(arg: Any, stdout_file: Path) -> StepResult:
    """What the entrypoint has written so far; it writes on its own schedule, so give it a moment."""
    deadline = time.monotonic() + OUTPUT_SETTLE_S
    while True:
        text = stdout_file.read_text(errors="replace")
        misses = text_failures(TextExpectation.from_yaml(arg), text, {})
        if not misses or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return StepResult("stdout", not misses, f"stdout so far: {'; '.join(misses) or 'as expected'}; "
                      f"observed {text.strip()[:100]!r}")


def _exec(container: Container, arg: dict[str, Any]) -> StepResult:
    """One process through the runtime's exec: its exit (0 by default) and, if given, its stdout.

    Its stdin is an empty pipe, never the host's /dev/null (runsc fchowns the
    stdio it is handed to its sandbox's user: procs.empty_stdin).
    """
    run = arg["run"]
    argv = ["sh", "-c", run] if isinstance(run, str) else [str(a) for a in run]
    stdin = empty_stdin()
    try:
        done = subprocess.run(container.driver.exec_argv(container.cid) + argv, stdin=stdin, capture_output=True,
                              text=True, timeout=container.timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        return StepResult("exec", False, f"exec: no answer in {container.timeout:g}s")
    finally:
        os.close(stdin)
    want = int(arg.get("exit", 0))
    misses = [] if done.returncode == want else [f"exit: expected {want}, observed {done.returncode}"]
    if "stdout" in arg:
        misses += text_failures(TextExpectation.from_yaml(arg["stdout"]), done.stdout, {})
    said = f"; stderr {done.stderr.strip()[-150:]!r}" if done.stderr.strip() else ""
    return StepResult("exec", not misses, f"exec: {'; '.join(misses) or 'as expected'}; "
                      f"stdout {done.stdout.strip()[:150]!r}{said}")


def run_step(step: Any, container: Container, stdout_file: Path) -> StepResult | None:
    """One step through the container's verbs; None for a step that checks nothing (release)."""
    verb, arg = parse(step)
    driver, cid = container.driver, container.cid
    if verb == "create":
        return _create(container, arg == "fails")
    if verb == "start":
        return _expect_rc("start", *_answer(container.start), arg == "fails")
    if verb == "delete":  # a plain delete: a runtime must refuse one of a running container
        return _expect_rc("delete", *_answer(lambda: driver.delete(cid, force=False)), arg == "fails")
    if verb == "kill":
        return _expect_rc(f"kill {arg}", *_answer(lambda: driver.kill(cid, str(arg))), False)
    if verb == "state":
        return _state(container, str(arg))
    if verb == "release":
        container.release()
        return None
    if verb == "wait":
        if container.pid is None:
            return StepResult("wait", False, "wait: no container was created")
        container.wait()  # kills it on timeout
        return None
    if verb == "stdout":
        return _stdout(arg, stdout_file)
    if verb == "exec":
        return _exec(container, arg)
    return StepResult(str(verb), False, f"{verb}: not a lifecycle step (see conformance/host/steps.py)")


def run_steps(steps: list[Any], container: Container, stdout_file: Path) -> list[StepResult]:
    """Run the steps in order; the caller's ``lifecycle.held`` deletes the container afterwards."""
    results = []
    for index, step in enumerate(steps):
        result = run_step(step, container, stdout_file)
        if result is not None:
            result.index = index  # the expectation is steps[index]
            results.append(result)
    return results
