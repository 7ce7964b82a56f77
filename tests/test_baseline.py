"""The regression gate: --baseline in a run, and ``python -m conformance diff`` offline.

The end-to-end tests use a deliberately broken runtime: a wrapper named
``runc`` that deletes the PID namespace from config.json before running the
real runc.  Against a baseline made with runc, the PID scenarios regress.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.reporting import document as matrix
from conformance.reporting.baseline import BaselineError, compare, load
from conformance.reporting.document import merge
from tests.conftest import PID1, REPO, run_suite, write_scenarios

HOST = {"kernel": "6.1.0", "cgroup": "hybrid"}


def _doc(cells: dict[tuple[str, str], str], runtimes=("runc",)) -> dict:
    results = [{"scenario": s, "runtime": rt, "host": "local", "verdict": v, "tags": ["pid"], "duration_s": 0.01,
                "evidence": f"{s} {v} evidence"} for (s, rt), v in cells.items()]
    return matrix.build_document(results, HOST, {rt: {"path": f"/usr/bin/{rt}", "version": "1"} for rt in runtimes})


# -- the comparison rules ---------------------------------------------------------
def test_pass_to_fail_or_error_is_a_regression_and_the_reverse_an_improvement():
    old = _doc({("a", "runc"): "pass", ("b", "runc"): "pass", ("c", "runc"): "fail", ("d", "runc"): "error"})
    new = _doc({("a", "runc"): "fail", ("b", "runc"): "error", ("c", "runc"): "pass", ("d", "runc"): "pass"})
    cmp = compare(old, new)
    assert [(c.scenario, c.old, c.new) for c in cmp.regressions] == [("a", "pass", "fail"), ("b", "pass", "error")]
    assert [(c.scenario, c.old, c.new) for c in cmp.improvements] == [("c", "fail", "pass"), ("d", "error", "pass")]
    assert not cmp.ok
    text = cmp.render("old.json", "new.json")
    assert "REGRESSIONS (2)" in text and "a on runc: pass → FAIL" in text and "a fail evidence" in text
    assert "improvements (2)" in text and "c on runc: fail → pass" in text


def test_skips_cells_in_one_run_only_and_known_failures_are_not_regressions():
    old = _doc({("a", "runc"): "pass", ("b", "runc"): "skip", ("c", "runc"): "fail", ("gone", "runc"): "pass",
                ("e", "runc"): "fail"})
    new = _doc({("a", "runc"): "skip", ("b", "runc"): "fail", ("c", "runc"): "fail", ("new", "runc"): "fail",
                ("e", "runc"): "error"})
    cmp = compare(old, new)
    assert cmp.ok and cmp.regressions == [] and cmp.improvements == []
    assert cmp.skipped == 2 and cmp.known_failures == [("c", "runc", "local")]
    assert [(c.scenario, c.old, c.new) for c in cmp.changed] == [("e", "fail", "error")]
    assert cmp.only_old == [("gone", "runc", "local")] and cmp.only_new == [("new", "runc", "local")]
    assert cmp.accepted() == {("c", "runc", "local"), ("e", "runc", "local")}
    assert "no regressions" in cmp.render()


def test_cells_are_per_runtime_and_version_changes_are_shown():
    old = _doc({("a", "runc"): "pass", ("a", "crun"): "fail"}, runtimes=("runc", "crun"))
    new = _doc({("a", "runc"): "pass", ("a", "crun"): "pass"}, runtimes=("runc", "crun"))
    new["runtimes"]["crun"]["version"] = "2"
    cmp = compare(old, new)
    assert [(c.column, c.new) for c in cmp.improvements] == [("crun", "pass")] and cmp.unchanged_passes == 1
    assert "crun: version 1 → 2" in cmp.render()


def test_an_unusable_baseline_is_one_sentence(tmp_path):
    with pytest.raises(BaselineError, match="cannot read the baseline"):
        load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(BaselineError, match="not JSON"):
        load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"schema": 1}')
    with pytest.raises(BaselineError, match="not a matrix.json"):
        load(tmp_path / "y.json")


# -- offline: python -m conformance ------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conformance", *args], cwd=REPO, capture_output=True, text=True)


def test_diff_command_exits_1_on_regressions_0_otherwise_2_on_bad_input(tmp_path):
    old, new, same = tmp_path / "old.json", tmp_path / "new.json", tmp_path / "same.json"
    old.write_text(json.dumps(_doc({("a", "runc"): "pass", ("b", "runc"): "fail"})))
    new.write_text(json.dumps(_doc({("a", "runc"): "fail", ("b", "runc"): "pass"})))
    same.write_text(json.dumps(_doc({("a", "runc"): "pass", ("b", "runc"): "fail"})))
    done = _cli("diff", str(old), str(new))
    assert done.returncode == 1, done.stderr
    assert "REGRESSIONS (1)" in done.stdout and "a on runc: pass → FAIL" in done.stdout
    assert "b on runc: fail → pass" in done.stdout
    done = _cli("diff", str(old), str(same))
    assert done.returncode == 0 and "no regressions" in done.stdout and "1 known failure(s)" in done.stdout
    done = _cli("diff", str(old), str(tmp_path / "nope.json"))
    assert done.returncode == 2 and "nope.json: cannot read the baseline" in done.stderr
    assert _cli("diff", str(old)).returncode == 2  # argparse: usage


def test_merge_puts_runtimes_side_by_side_and_render_rewrites_the_views(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_doc({("x", "runc"): "pass"})))
    b.write_text(json.dumps(_doc({("x", "crun"): "fail"}, runtimes=("crun",))))
    done = _cli("merge", str(a), str(b), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    doc = json.loads((tmp_path / "out" / "matrix.json").read_text())
    assert list(doc["runtimes"]) == ["runc", "crun"] and len(doc["results"]) == 2
    assert "x ≠" in (tmp_path / "out" / "matrix.md").read_text()
    assert merge([load(a), load(b)])["results"] == doc["results"]
    done = _cli("render", str(a), "-o", str(tmp_path / "r"))
    assert done.returncode == 0 and (tmp_path / "r" / "matrix.html").read_text().startswith("<!doctype html>")


# -- in a run: --baseline ------------------------------------------------------------
SCENARIOS = {
    "pid.yaml": PID1,
    "uts.yaml": """
        id: hostname
        title: the configured hostname
        tags: [uts]
        control: [uts]
        patch: {hostname: gate-check}
        run: hostname
        expect: {exit: 0, stdout: gate-check}
        """,
}

BROKEN_RUNC = """#!/bin/sh
# runc, except that every container shares the host's PID namespace: the
# wrapper deletes the pid namespace from the bundle's config.json first.
prev=
for arg in "$@"; do
  if [ "$prev" = "--bundle" ]; then
    "{python}" -c 'import json, sys
path = sys.argv[1] + "/config.json"
config = json.load(open(path))
config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "pid"]
json.dump(config, open(path, "w"))' "$arg"
  fi
  prev=$arg
done
exec runc "$@"
"""


@pytest.fixture
def broken_runc(tmp_path) -> Path:
    """A runc that forgets the PID namespace, named runc so its cells compare with runc's."""
    path = tmp_path / "broken" / "runc"
    path.parent.mkdir()
    path.write_text(BROKEN_RUNC.replace("{python}", sys.executable))
    path.chmod(0o755)
    return path


def test_a_runtime_that_drops_the_pid_namespace_fails_the_gate_with_a_readable_diff(tmp_path, broken_runc,
                                                                                    no_leftovers):
    sc = write_scenarios(tmp_path / "sc", SCENARIOS)
    good = run_suite(sc, tmp_path / "good", "--runtime=runc")
    assert good.returncode == 0, good.output[-2000:]
    baseline = tmp_path / "good" / "matrix.json"

    bad = run_suite(sc, tmp_path / "bad", f"--runtime={broken_runc}", f"--baseline={baseline}")
    assert bad.returncode == 1, bad.output[-3000:]
    assert bad.verdicts() == {("pid1", "runc"): "fail", ("hostname", "runc"): "pass"}
    assert "baseline comparison" in bad.output and "REGRESSIONS (1)" in bad.output
    assert "pid1 on runc: pass → FAIL" in bad.output
    assert "stdout: expected '1'; observed '" in bad.output.split("REGRESSIONS")[1]
    assert "1 regression(s), 0 improvement(s)" in bad.output

    # Offline, the same two files say the same.
    done = _cli("diff", str(baseline), str(tmp_path / "bad" / "matrix.json"))
    assert done.returncode == 1 and "pid1 on runc: pass → FAIL" in done.stdout

    # A failure the baseline already had is accepted; the fix shows as an improvement.
    again = run_suite(sc, tmp_path / "again", f"--runtime={broken_runc}",
                      f"--baseline={tmp_path / 'bad' / 'matrix.json'}")
    assert again.returncode == 0, again.output[-3000:]
    assert "no regressions" in again.output and "failed in the baseline too: accepted" in again.output
    fixed = run_suite(sc, tmp_path / "fixed", "--runtime=runc", f"--baseline={tmp_path / 'bad' / 'matrix.json'}")
    assert fixed.returncode == 0 and "improvements (1)" in fixed.output and "pid1 on runc: fail → pass" in fixed.output


def test_a_failure_the_baseline_does_not_know_still_fails_and_a_bad_baseline_is_a_usage_error(tmp_path,
                                                                                             broken_runc):
    sc = write_scenarios(tmp_path / "sc", SCENARIOS)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(matrix.build_document([], HOST, {})))
    run = run_suite(sc, tmp_path / "out", f"--runtime={broken_runc}", f"--baseline={empty}")
    assert run.returncode == 1
    assert "failing cells the baseline does not know (1) still fail the session: pid1 on runc" in run.output
    run = run_suite(sc, tmp_path / "out2", "--runtime=runc", f"--baseline={tmp_path / 'missing.json'}")
    assert run.returncode == 4 and "--baseline" in run.output and "cannot read the baseline" in run.output
