"""procs.run_verb: how the bare lane runs a runtime verb to its end (real processes, no runtime needed).

It replaces ``subprocess.run(..., timeout=)`` for every verb (state, start, kill,
delete …): the same answer — exit status, stdout and stderr as text, or both in a
file — with the end awaited on a pidfd; a verb that outlives its timeout is killed
with its whole process group; and while it runs, a callback can reap the zombies
the harness adopted, never the verb's own process (its exit status is the answer).
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conformance.host.drivers.procs import reap_adopted, run_verb


def test_a_verbs_status_and_both_outputs_come_back_as_text():
    done = run_verb(["sh", "-c", "printf 'out\\r\\nline'; echo err >&2; exit 3"], 5)
    assert (done.returncode, done.stdout, done.stderr) == (3, "out\nline", "err\n")


def test_its_stdin_is_an_empty_pipe_and_it_runs_in_a_session_of_its_own():
    done = run_verb(["sh", "-c", "cat; readlink /proc/self/fd/0; ps -o sid= -p $$"], 5)
    lines = done.stdout.split()
    assert lines[0].startswith("pipe:"), done.stdout
    assert int(lines[1]) != os.getsid(0)


def test_with_an_output_file_both_streams_go_there():
    with tempfile.TemporaryFile() as out:
        done = run_verb(["sh", "-c", "echo one; echo two >&2"], 5, output=out)
        out.seek(0)
        assert done.returncode == 0 and sorted(out.read().split()) == [b"one", b"two"]
        assert (done.stdout, done.stderr) == ("", "")


def test_a_verb_past_its_timeout_is_killed_with_its_process_group(tmp_path: Path):
    pid_file = tmp_path / "child"
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_verb(["sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"], 0.5)
    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        reap_adopted()  # the killed sleep may come back to us as a zombie (subreaper)
        time.sleep(0.01)
    assert not Path(f"/proc/{child}").exists()


def test_a_verb_that_keeps_its_pipes_open_after_it_exits_is_not_waited_for_past_its_timeout():
    """A child that inherited the verb's stdout holds the pipe: the timeout still ends the wait."""
    with pytest.raises(subprocess.TimeoutExpired):
        run_verb(["sh", "-c", "sleep 30 &"], 0.5)


def test_meanwhile_runs_while_the_verb_runs_and_never_takes_the_verbs_own_status():
    seen: list[int] = []

    def reap_others(verb_pid: int) -> None:
        seen.append(verb_pid)
        reap_adopted(exclude=verb_pid)

    done = run_verb(["sh", "-c", "sleep 0.2; exit 7"], 5, meanwhile=reap_others)
    assert done.returncode == 7
    assert len(seen) >= 5 and len(set(seen)) == 1
