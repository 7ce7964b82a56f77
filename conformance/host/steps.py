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
  release   (end the entrypoint's stdin: a ``read _`` returns)
  wait      (the entrypoint's exit status becomes the scenario's ``exit``)
  stdout: <text expectation>   (what the entrypoint has written so far)
"""
from __future__ import annotations

import json
import os
import time
from typing import IO, Any

from conformance.model.errors import DriverError
from conformance.model.matchers import text_failures
from conformance.model.records import StepResult
from conformance.model.scenario import TextExpectation

from .driver import RuntimeDriver, wait_exit

STATE_SETTLE_S = 2.0  # a "stopped" state may lag the exit by a moment
OUTPUT_SETTLE_S = 3.0  # how long a stdout step waits for the entrypoint to print


def parse(step: Any) -> tuple[str, Any]:
    if isinstance(step, str):
        return step, None
    (verb, arg), = step.items()
    return verb, arg


def _verb(driver: RuntimeDriver, *argv: str) -> tuple[int, str]:
    call = driver._call_reaping if argv[0] == "delete" else driver._call  # runsc's gofer: see there
    done = call(*argv, check=False)
    return done.returncode, (done.stderr or done.stdout).strip()[-200:]


def _expect_rc(name: str, rc: int, message: str, fails: bool) -> StepResult:
    ok = (rc != 0) if fails else (rc == 0)
    want = "to fail" if fails else "to succeed"
    return StepResult(name, ok, f"{name}: expected {want}, exit {rc}" + (f" ({message})" if message else ""))


def _state(driver: RuntimeDriver, cid: str, want: str, pid: int | None) -> StepResult:
    name = f"state {want}"
    deadline = time.monotonic() + (STATE_SETTLE_S if want == "stopped" else 0)
    while True:
        rc, message = _verb(driver, "state", cid)
        if want == "absent":
            return StepResult(name, rc != 0, f"{name}: state of a deleted/unknown id "
                              + ("failed as it must" if rc != 0 else "still answers"))
        status = None
        if rc == 0:
            try:
                answer = json.loads(driver._call("state", cid, check=False).stdout)
                status = answer.get("status")
                pid_ok = want not in ("created", "running") or int(answer.get("pid") or 0) > 0
            except ValueError:
                answer, pid_ok = {}, False
        if status == want or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if rc != 0:
        return StepResult(name, False, f"{name}: state failed: {message}")
    ok = status == want and pid_ok
    return StepResult(name, ok, f"{name}: observed status {status!r}, pid {answer.get('pid')}")


def run_steps(steps: list[Any], driver: RuntimeDriver, bundle_path: Any, cid: str, out: IO[bytes],
              err: IO[bytes], timeout: float, stdout_file: Any) -> tuple[list[StepResult], int | None, bool]:
    """Run the steps; returns (results, exit status if waited for, timed out). Always deletes."""
    results: list[StepResult] = []
    stdin_r, stdin_w = os.pipe()
    pid: int | None = None
    exit_status, timed_out = None, False
    try:
        for index, step in enumerate(steps):
            done = len(results)
            verb, arg = parse(step)
            if verb == "create":
                try:
                    pid = driver.create(bundle_path, cid, stdin_r, out, err, timeout)
                    results.append(_expect_rc("create", 0, "", bool(arg == "fails")))
                except DriverError as exc:
                    results.append(_expect_rc("create", 1, str(exc)[-200:], bool(arg == "fails")))
            elif verb in ("start", "delete"):
                rc, message = _verb(driver, verb, cid)
                results.append(_expect_rc(verb, rc, message, arg == "fails"))
            elif verb == "kill":
                rc, message = _verb(driver, "kill", cid, str(arg))
                results.append(_expect_rc(f"kill {arg}", rc, message, False))
            elif verb == "state":
                results.append(_state(driver, cid, str(arg), pid))
            elif verb == "release":
                if stdin_w >= 0:
                    os.write(stdin_w, b"\n")
                    os.close(stdin_w)
                    stdin_w = -1
            elif verb == "wait":
                if pid is None:
                    results.append(StepResult("wait", False, "wait: no container was created"))
                else:
                    exit_status, timed_out = wait_exit(pid, timeout)
                    if timed_out:
                        driver.kill(cid)
                        wait_exit(pid, 5.0)
            elif verb == "stdout":
                # The entrypoint writes on its own schedule: give it a moment to get there.
                deadline = time.monotonic() + OUTPUT_SETTLE_S
                while True:
                    text = stdout_file.read_text(errors="replace")
                    misses = text_failures(TextExpectation.from_yaml(arg), text, {})
                    if not misses or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
                results.append(StepResult("stdout", not misses, f"stdout so far: {'; '.join(misses) or 'as expected'}; "
                                          f"observed {text.strip()[:100]!r}"))
            for result in results[done:]:
                result.index = index  # the expectation is steps[index]
    finally:
        os.close(stdin_r)
        if stdin_w >= 0:
            os.close(stdin_w)
        driver.delete(cid)
        if pid is not None and exit_status is None:
            wait_exit(pid, 5.0)
    return results, exit_status, timed_out
