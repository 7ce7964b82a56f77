"""Lifecycle scenarios: drive the runtime verb by verb and check each answer.

The runtime-spec's lifecycle (runtime.md) is a contract on the command line
itself: ``create`` leaves the container "created" with a pid and the
entrypoint not yet run, ``start`` makes it "running", its exit makes it
"stopped", ``delete`` forgets it; ``kill`` delivers a signal; an unknown id,
a duplicate id or a second start are errors.  A scenario lists ``steps``;
each becomes one checked line of evidence.

Steps (strings or one-key mappings):
  create | create: fails | create: succeeds (a refusal is the finding, not an error)
  start | start: fails        delete | delete: fails | delete: force
  kill: SIGNAL | kill: {signal: SIGNAL, fails: true}   (a refusal expected: a stopped container)
  state: created|running|paused|stopped|absent
  state: {status: STATUS, fields: {NAME: <text expectation>}}   (each field of the state JSON as text:
                                a string as is, a number in decimal, an object or list as sorted JSON,
                                a missing field as "<absent>")
  pause | pause: fails          resume | resume: fails
  update: {memory: N, pids: N, cpuset_cpus: "1", …}   (the driver's UPDATE_FLAGS; must succeed)
  ps: <text expectation>       (the container's processes as the runtime's ``ps`` lists them, as pids of
                                the container's own PID namespace, ascending: "1 2 3"; or ps: as-stdout,
                                the pids the entrypoint's last line of output lists)
  exec: {run: CMD, stdout: <text>, exit: N, …}   (a process through the runtime's exec; exit 0 by default;
                                exec's flags and the comparison with the init: exec_step.py)
  cli: {args: [...], fails: BOOL, output: <text>}   (the runtime's command line itself, as given;
                                with cleanup: true an action whose answer is not judged, e.g. removing
                                what a runtime should have refused to make)
  release   (end the entrypoint's stdin: a ``read _`` returns)
  wait      (the entrypoint's exit status becomes the scenario's ``exit``)
  stdout: <text expectation>   (what the entrypoint has written so far)
  sleep: SECONDS               (let time pass, e.g. while paused)
  host_write: {path: P, content: TEXT}   (write a host file now, e.g. the bundle's config.json after create)
  host_file: {path: P, <text expectation>}   (a host file as it is now; a missing one reads "<absent>")
  cgroup: absent|present       (the config's cgroupsPath, in every hierarchy mounted here: no directory
                                left, or at least one there)
  host_mount: NAME             (the harness mounts a tmpfs at {{host_shared_mount}}/NAME on the host, while
                                the container lives: what mount propagation must or must not carry inside)

Variables the steps add for later steps and the judge: ``{{init_pid}}`` (the init's host pid, as
create reported it: the driver's --pid-file) and ``{{state_pid}}`` (the pid the last ``state``
answered with, when it named one).

Each step is one verb of ``lifecycle.Container`` or of its driver, the same
ones every other path uses; ``wait`` kills the container past the timeout,
and ``lifecycle.held`` deletes it after the last step, however the steps end.
Host facts are read at the stage they name as the steps pass it: ``created``
after create, ``running`` after start (once the entrypoint runs), ``paused``
after pause, ``exited`` after wait, ``deleted`` after a delete.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

from conformance.model.errors import DriverError
from conformance.model.matchers import text_failures
from conformance.model.placeholders import fill
from conformance.model.records import StepResult
from conformance.model.scenario import TextExpectation

from . import cgroupfs, exec_step
from .drivers import VerbFailed
from .host_setup import mount_under_shared
from .lifecycle import Container, Stage

CALL_TIMEOUT_S = 30.0  # a cli or exec step
ABSENT = "<absent>"  # a state field, or a host file, that is not there

STATE_SETTLE_S = 2.0  # a "stopped" state may lag the exit by a moment
OUTPUT_SETTLE_S = 3.0  # how long a stdout step waits for the entrypoint to print
WRITERS_LOOK_S = 0.02  # how often that wait asks whether anything may still print (writers.py)


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


def _create(container: Container, fails: bool, variables: dict[str, str]) -> StepResult:
    try:
        pid = container.create()
    except DriverError as exc:  # a refusal, or a create that never returned
        return _expect_rc("create", 1, str(exc)[-200:], fails)
    variables["init_pid"] = str(pid)
    return _expect_rc("create", 0, "", fails)


def _field_text(answer: dict[str, Any], name: str) -> str:
    """One field of the state JSON as a text expectation reads it."""
    if name not in answer:
        return ABSENT
    value = answer[name]
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _state(container: Container, arg: Any, variables: dict[str, str]) -> StepResult:
    """One ``state`` call per poll; polls only while a "stopped" may still lag the exit."""
    want, fields = (str(arg), {}) if not isinstance(arg, dict) else (str(arg["status"]), dict(arg.get("fields", {})))
    name = f"state {want}" + (f" ({', '.join(fields)})" if fields else "")
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
    if int(answer.get("pid") or 0) > 0:
        variables["state_pid"] = str(answer["pid"])
    pid_ok = want not in ("created", "running", "paused") or int(answer.get("pid") or 0) > 0
    misses = [] if answer.get("status") == want and pid_ok else \
        [f"observed status {answer.get('status')!r}, pid {answer.get('pid')}"]
    for field, expected in fields.items():
        misses += [f"{field}: {miss}" for miss in
                   text_failures(TextExpectation.from_yaml(expected), _field_text(answer, field), variables)]
    shown = json.dumps(answer, sort_keys=True)[:300]
    return StepResult(name, not misses, f"{name}: {'; '.join(misses) or 'as expected'}; observed {shown}")


def _stdout(arg: Any, stdout_file: Path, variables: dict[str, str],
            may_write: Callable[[Path], bool] = lambda _path: True) -> StepResult:
    """What the entrypoint has written so far; it writes on its own schedule, so give it a moment —
    as long as anything may still write (``may_write``: Container.may_write); the file is read after
    that look, so whatever was written before it is in."""
    deadline = next_look = time.monotonic() + OUTPUT_SETTLE_S
    final = False
    while True:
        text = stdout_file.read_text(errors="replace")
        misses = text_failures(TextExpectation.from_yaml(arg), text, variables)
        if not misses or final or time.monotonic() > deadline:
            break
        if time.monotonic() >= next_look or next_look == deadline:  # the first miss looks at once
            next_look = time.monotonic() + WRITERS_LOOK_S
            final = not may_write(stdout_file)  # then the file is read once more, and that is all
            continue
        time.sleep(0.01)
    return StepResult("stdout", not misses, f"stdout so far: {'; '.join(misses) or 'as expected'}; "
                      f"observed {text.strip()[:100]!r}")


def _ps(container: Container, arg: Any, stdout_file: Path) -> StepResult:
    """What ``ps`` lists, as pids of the container's PID namespace (a sandbox's are that already).

    ``as-stdout``: exactly the pids the entrypoint's last line of output lists
    (it read its own /proc, which shows its PID namespace: its processes).
    """
    try:
        listed = container.driver.ps(container.cid)
    except DriverError as exc:
        return StepResult("ps", False, f"ps: failed: {str(exc)[-200:]}")
    inner = listed if container.driver.sandboxed else [_pid_inside(p) for p in listed]
    text = " ".join(str(p) for p in sorted(inner))
    if arg == "as-stdout":
        lines = stdout_file.read_text(errors="replace").split("\n")
        last = next((line for line in reversed(lines) if line.strip()), "")
        want = " ".join(sorted(last.split(), key=lambda p: int(p) if p.isdigit() else -1))
        arg = {"equals": want}
    misses = text_failures(TextExpectation.from_yaml(arg), text, {})
    return StepResult("ps", not misses, f"ps: {'; '.join(misses) or 'as expected'}; listed {text!r} "
                      f"(as the runtime gave them: {listed})")


def _pid_inside(pid: int) -> int:
    """A host pid as the innermost PID namespace numbers it (/proc/PID/status NSpid); -PID if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except OSError:
        pass
    return -pid


def _cli(container: Container, arg: dict[str, Any], variables: dict[str, str]) -> StepResult | None:
    """The runtime's command line: a refusal must be a non-zero exit, with words that say why."""
    args = [str(a) for a in fill(arg["args"], variables)]
    name = "cli " + " ".join(args)
    try:
        rc, output = container.driver.call(args, CALL_TIMEOUT_S)
    except DriverError as exc:
        return StepResult(name, False, f"{name}: {exc}")
    if arg.get("cleanup"):
        return None
    fails = bool(arg.get("fails"))
    misses = [] if (rc != 0) == fails else [f"expected {'a non-zero' if fails else 'a zero'} exit, observed {rc}"]
    if "output" in arg:
        misses += text_failures(TextExpectation.from_yaml(arg["output"]), output, variables)
    return StepResult(name, not misses, f"{name}: {'; '.join(misses) or 'as expected'}; exit {rc}, "
                      f"said {output.strip()[-200:]!r}")


def _host_mount(name: str, variables: dict[str, str]) -> StepResult:
    """A mount made on the host after the container started (only under the suite's shared canary)."""
    try:
        where = mount_under_shared(variables, name)
    except OSError as exc:
        return StepResult(f"host_mount {name}", False, f"host_mount {name}: {exc}")
    return StepResult(f"host_mount {name}", True, f"host_mount {name}: a tmpfs mounted at {where} on the host")


def _update(container: Container, arg: dict[str, int | str]) -> StepResult:
    name = "update " + " ".join(f"{k}={v}" for k, v in arg.items())
    return _expect_rc(name, *_answer(lambda: container.driver.update(container.cid, arg)), False)


def _kill(container: Container, arg: Any) -> StepResult:
    """``kill: SIG`` must be delivered; ``kill: {signal: SIG, fails: true}`` must be refused."""
    sig, fails = (str(arg), False) if not isinstance(arg, dict) else (str(arg["signal"]), bool(arg.get("fails")))
    return _expect_rc(f"kill {sig}", *_answer(lambda: container.driver.kill(container.cid, sig)), fails)


def _host_write(arg: dict[str, Any], variables: dict[str, str]) -> None:
    Path(fill(arg["path"], variables)).write_text(fill(arg["content"], variables))


def _host_file(arg: dict[str, Any], variables: dict[str, str]) -> StepResult:
    """A host file as it is at this point of the lifecycle (a hook's log between two verbs)."""
    path = Path(fill(arg["path"], variables))
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        text = ABSENT
    expected = {k: v for k, v in arg.items() if k != "path"}
    misses = text_failures(TextExpectation.from_yaml(expected), text, variables)
    return StepResult(f"host_file {path.name}", not misses, f"host_file {path}: {'; '.join(misses) or 'as expected'}; "
                      f"observed {text.strip()[-200:]!r}")


def _cgroup(want: str, variables: dict[str, str]) -> StepResult:
    """The directories at the config's cgroupsPath, in every hierarchy mounted here."""
    given = variables.get("cgroups_path", "")
    if not given and variables.get("no_cgroup"):  # the lane gave the container none: nothing to judge
        why = f"the container has no cgroup of its own ({variables['no_cgroup']})"
        return StepResult(f"cgroup {want}", False, f"cgroup {want}: not judged: {why}", sandbox=why)
    if not given.startswith("/"):
        return StepResult(f"cgroup {want}", False, f"cgroup {want}: the config names no absolute cgroupsPath "
                          f"({given!r}), so the harness cannot tell where its directories would be")
    found = cgroupfs.existing_dirs(given)
    ok = not found if want == "absent" else bool(found)
    return StepResult(f"cgroup {want}", ok, f"cgroup {want}: at {given}, "
                      + (f"found {', '.join(found)}" if found else "no directory in any hierarchy"))


def _delete_force(container: Container) -> StepResult:
    """``delete --force`` as a checked verb (the driver's own delete stays quiet: it is the cleanup)."""
    rc, output = container.driver.force_delete(container.cid)
    return _expect_rc("delete --force", rc, output.strip()[-200:], False)


def run_step(step: Any, container: Container, stdout_file: Path, variables: Optional[dict[str, str]] = None,
             at: Optional[Stage] = None) -> StepResult | None:
    """One step through the container's verbs; None for a step that checks nothing (release).

    ``at(stage, container)`` is told each stage the container reaches (created,
    running, paused, exited, deleted): observe.py reads host facts there.
    """
    verb, arg = parse(step)
    variables = {} if variables is None else variables
    result = _verb(verb, arg, container, stdout_file, variables)
    reached = _STAGE_AFTER.get(verb) if arg != "fails" else None
    done = result is None or result.ok or verb in _WHATEVER_IT_ANSWERED
    if at is not None and reached and done and container.pid is not None:
        at(reached, container)
    return result


#: the stage a step brings the container to (for host facts read there): when it succeeded …
_STAGE_AFTER = {"create": "created", "start": "running", "pause": "paused", "wait": "exited",
                "delete": "deleted"}
#: … or, for these, whatever it answered: what a failed delete leaves is what the facts are about
_WHATEVER_IT_ANSWERED = ("wait", "delete")


def _verb(verb: str, arg: Any, container: Container, stdout_file: Path,
          variables: dict[str, str]) -> StepResult | None:
    driver, cid = container.driver, container.cid
    if verb == "create":
        return _create(container, arg == "fails", variables)
    if verb == "start":
        return _expect_rc("start", *_answer(container.start), arg == "fails")
    if verb == "delete" and arg == "force":
        return _delete_force(container)
    if verb == "delete":  # a plain delete: a runtime must refuse one of a running container
        return _expect_rc("delete", *_answer(lambda: driver.delete(cid, force=False)), arg == "fails")
    if verb in ("pause", "resume"):
        act = driver.pause if verb == "pause" else driver.resume
        return _expect_rc(verb, *_answer(lambda: act(cid)), arg == "fails")
    if verb == "update":
        return _update(container, dict(arg))
    if verb == "ps":
        return _ps(container, arg, stdout_file)
    if verb == "exec":
        return exec_step.run(container, dict(arg), variables, stdout_file.parent)
    if verb == "cli":
        return _cli(container, dict(arg), variables)
    if verb == "sleep":
        time.sleep(float(arg))
        return None
    if verb == "kill":
        return _kill(container, arg)
    if verb == "state":
        return _state(container, arg, variables)
    if verb == "host_write":
        _host_write(dict(arg), variables)
        return None
    if verb == "host_file":
        return _host_file(dict(arg), variables)
    if verb == "cgroup":
        return _cgroup(str(arg), variables)
    if verb == "release":
        container.release()
        return None
    if verb == "wait":
        if container.pid is None:
            return StepResult("wait", False, "wait: no container was created")
        container.wait()  # kills it on timeout
        return None
    if verb == "stdout":
        return _stdout(arg, stdout_file, variables, container.may_write)
    if verb == "host_mount":
        return _host_mount(str(arg), variables)
    return StepResult(str(verb), False, f"{verb}: not a lifecycle step (see conformance/host/steps.py)")


def refused_create(steps: list[Any] | tuple[Any, ...], results: list[StepResult]) -> str | None:
    """The runtime's refusal when a ``create`` step that must succeed failed, else None.

    Such a scenario never had a container to look at: like a refused ``run``,
    that is an error of the runtime's set-up (the verdict ``error``), not a
    failed or unobservable check.  ``create: succeeds`` says the refusal is
    itself what the scenario checks (a runtime that fails create over a
    poststart hook): then it is an ordinary failed expectation.
    """
    for result in results:
        if not result.ok and 0 <= result.index < len(steps) and steps[result.index] == "create":
            return result.detail
    return None


def run_steps(steps: list[Any], container: Container, stdout_file: Path,
              variables: Optional[dict[str, str]] = None, at: Optional[Stage] = None) -> list[StepResult]:
    """Run the steps in order; the caller's ``lifecycle.held`` deletes the container afterwards."""
    results = []
    for index, step in enumerate(steps):
        result = run_step(step, container, stdout_file, variables, at)
        if result is not None:
            result.index = index  # the expectation is steps[index]
            results.append(result)
    return results
