"""Collection, tested as pytest tests its plugins: small files, ``pytester``, no runtime.

Ids, ``-m`` by tag, ``--controls``, invalid files and duplicate ids are decided
at collection time, so each test here takes milliseconds and no runtime has to
exist: the runtimes are named by paths that do not exist, and the only items
that run are the error items of invalid files, which never reach a runtime.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

# The plugin imports the YAML loader (and PyYAML) only when a file is not in its cache.  pytester's in-process
# runs drop from sys.modules what was first imported inside them, and PyYAML's C parser, an extension module,
# cannot be imported afresh (it keeps the node classes of its first import): imported here, they stay.
import conformance.catalog.loader  # noqa: F401

pytest_plugins = ["pytester"]

MISSING_A = "/nonexistent/oci-conformance-test/runc-build"
MISSING_B = "/nonexistent/oci-conformance-test/crun-build"


def scenario(sc_id: str, tags: str = "[pid]", control: str = "[pid]", extra: str = "") -> str:
    """A valid scenario document; line 1 is ``id``, line 6 is ``expect``."""
    return (f"id: {sc_id}\ntitle: {sc_id} holds\ntags: {tags}\ncontrol: {control}\nrun: echo $$\n"
            f"expect: {{exit: 0, stdout: \"1\"}}\n{extra}")


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run pytest with only this plugin loaded, on the scenario directory ``scen/``."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("OCI_CONFORMANCE_TAG", "collect-test")  # the plugin sets it when absent: keep ours

    def run(*args: str, runtimes: tuple[str, ...] = (MISSING_A, MISSING_B)) -> pytest.RunResult:
        runtime_args = [f"--runtime={r}" for r in runtimes]
        # in-process, the plugin is already imported (by this session), so pytest cannot rewrite its asserts
        return pytester.runpytest("-p", "conformance.plugin.hooks", "-p", "no:cacheprovider",
                                  "-W", "ignore::pytest.PytestAssertRewriteWarning",
                                  "--scenarios", "scen", "--matrix-dir", "out", *runtime_args, "scen", *args)

    assert not Path(MISSING_A).exists() and not Path(MISSING_B).exists(), "the runtimes must not exist"
    return run


def write(pytester: pytest.Pytester, **files: str) -> None:
    pytester.makefile(".yaml", **{f"scen/{name}": body for name, body in files.items()})


def collected(result: pytest.RunResult) -> list[str]:
    """The item names of ``--collect-only -q`` (file::name → name)."""
    return [line.split("::", 1)[1] for line in result.outlines if "::" in line]


def matrix(pytester: pytest.Pytester) -> dict:
    return json.loads((pytester.path / "out" / "matrix.json").read_text())


# -- ids, marks, controls ------------------------------------------------------------
def test_item_ids_are_scenario_runtime_and_host_and_no_runtime_is_needed(pytester, suite):
    write(pytester, pid1=scenario("pid1"), uts1=scenario("uts1", tags="[uts]", control="[uts]"))
    result = suite("--collect-only", "-q", "-p", "testinfra.plugin",
                   "--hosts=local,ssh://root@box.invalid:2222")
    assert result.ret == pytest.ExitCode.OK
    assert sorted(collected(result)) == sorted(
        f"{sc}[{rt}@{host}]" for sc in ("pid1", "uts1") for rt in ("runc-build", "crun-build")
        for host in ("local", "ssh://root@box.invalid:2222"))
    result.stdout.fnmatch_lines(["8 tests collected*"])


def test_a_known_runtime_keeps_its_name_and_a_path_is_named_by_its_basename(pytester, suite):
    write(pytester, pid1=scenario("pid1"))
    result = suite("--collect-only", "-q", runtimes=("runc,ref", MISSING_A))
    assert collected(result) == ["pid1[runc@local]", "pid1[ref@local]", "pid1[runc-build@local]"]


def test_m_selects_by_scenario_tags(pytester, suite):
    write(pytester, pid1=scenario("pid1"), uts1=scenario("uts1", tags="[uts, pid]", control="[uts]"),
          mem1=scenario("mem1", tags="[memory]", control="[memory]"))
    names = lambda *args: sorted(collected(suite("--collect-only", "-q", *args)))  # noqa: E731
    assert names("-m", "uts") == ["uts1[crun-build@local]", "uts1[runc-build@local]"]
    assert names("-m", "pid and not uts") == ["pid1[crun-build@local]", "pid1[runc-build@local]"]
    assert names("-m", "memory or uts") == sorted(f"{sc}[{rt}@local]" for sc in ("mem1", "uts1")
                                                   for rt in ("runc-build", "crun-build"))
    suite("--collect-only", "-q", "-m", "uts").stdout.fnmatch_lines(["2/6 tests collected (4 deselected)*"])


def test_controls_add_ref_without_switch_items_marked_control(pytester, suite):
    write(pytester, pid1=scenario("pid1"), user1=scenario("user1", tags="[user]", control="[user, pid]"))
    plain = collected(suite("--collect-only", "-q"))
    assert not any("ref-without" in name for name in plain), "controls only with --controls"
    names = collected(suite("--collect-only", "-q", "--controls"))
    assert "pid1[ref-without-pid@local]" in names and "user1[ref-without-user+pid@local]" in names
    only = collected(suite("--collect-only", "-q", "--controls", "-m", "control"))
    assert sorted(only) == ["pid1[ref-without-pid@local]", "user1[ref-without-user+pid@local]"]
    tagged = collected(suite("--collect-only", "-q", "--controls", "-m", "control and user"))
    assert tagged == ["user1[ref-without-user+pid@local]"], "a control carries its scenario's tags too"


# -- invalid files ----------------------------------------------------------------------
def test_an_invalid_yaml_file_is_one_error_item_per_runtime_and_the_rest_collects(pytester, suite):
    write(pytester, pid1=scenario("pid1"), uts1=scenario("uts1", tags="[uts]", control="[uts]"),
          broken="id: broken\ntitle: t\ntags: [pid\n")
    result = suite("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    assert sorted(collected(result)) == sorted(
        f"{sc}[{rt}@local]" for sc in ("broken.yaml", "pid1", "uts1") for rt in ("runc-build", "crun-build"))
    assert sorted(collected(suite("--collect-only", "-q", "-m", "uts"))) == [
        "uts1[crun-build@local]", "uts1[runc-build@local]"]

    ran = suite("-k", "broken")
    ran.assert_outcomes(failed=2, deselected=4)
    ran.stdout.fnmatch_lines(["*invalid scenario: broken.yaml*", "*scen/broken.yaml:3: not valid YAML*"])
    cells = matrix(pytester)["results"]
    assert {(c["scenario"], c["runtime"], c["verdict"], c["invalid"]) for c in cells} == {
        ("broken.yaml", "runc-build", "error", True), ("broken.yaml", "crun-build", "error", True)}
    assert all(c["file"] == "broken.yaml:3" and "not valid YAML" in c["evidence"] for c in cells)


def test_an_unknown_key_names_the_key_and_its_line_and_keeps_the_file_s_tags(pytester, suite):
    write(pytester, pid1=scenario("pid1"), typo=scenario("typo", tags="[uts]", extra="runn: true\n"))
    selected = collected(suite("--collect-only", "-q", "-m", "uts"))
    assert sorted(selected) == ["typo.yaml[crun-build@local]", "typo.yaml[runc-build@local]"], \
        "an invalid file keeps the tags it can be read to have, so -m TAG still shows its error"
    ran = suite("-k", "typo")
    ran.assert_outcomes(failed=2, deselected=2)
    ran.stdout.fnmatch_lines(["*scen/typo.yaml:7: unknown key 'runn' in top level (allowed: *"])


def test_a_duplicate_id_in_two_files_makes_both_error_items_and_the_session_runs_on(pytester, suite):
    write(pytester, first=scenario("same-id"), second="# the same property, again\n" + scenario("same-id"),
          other=scenario("other", tags="[uts]", control="[uts]"))
    result = suite("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK, "a duplicate id must not abort the session"
    assert sorted(collected(result)) == sorted(
        f"{sc}[{rt}@local]" for sc in ("first.yaml", "second.yaml", "other") for rt in ("runc-build", "crun-build"))
    assert len(collected(suite("--collect-only", "-q", "-m", "pid"))) == 4, "error items keep the files' tags"

    ran = suite("-k", "not other")
    ran.assert_outcomes(failed=4, deselected=2)
    assert ran.ret == pytest.ExitCode.TESTS_FAILED
    ran.stdout.fnmatch_lines([
        "*scen/first.yaml:1: duplicate scenario id 'same-id' (also at *scen/second.yaml:2)",
        "*scen/second.yaml:2: duplicate scenario id 'same-id' (also at *scen/first.yaml:1)"], consecutive=False)
    cells = matrix(pytester)["results"]
    assert {(c["scenario"], c["runtime"]) for c in cells if c["verdict"] == "error" and c["invalid"]} == {
        (f, rt) for f in ("first.yaml", "second.yaml") for rt in ("runc-build", "crun-build")}
    assert all("first.yaml:1" in c["evidence"] and "second.yaml:2" in c["evidence"] for c in cells)


def test_a_duplicate_id_inside_one_file_is_the_same_kind_of_error(pytester, suite):
    write(pytester, twice=scenario("same-id") + "---\n" + scenario("same-id"), other=scenario("other"))
    assert sorted(collected(suite("--collect-only", "-q"))) == sorted(
        f"{sc}[{rt}@local]" for sc in ("twice.yaml", "other") for rt in ("runc-build", "crun-build"))
    ran = suite("-k", "twice")
    ran.assert_outcomes(failed=2, deselected=2)
    ran.stdout.fnmatch_lines(["*scen/twice.yaml:1: duplicate scenario id 'same-id' (also at *scen/twice.yaml:8)"])


def test_a_baseline_never_accepts_an_invalid_file(pytester, suite):
    """Even when the baseline holds the same error cell: a broken catalog is no runtime's known failure."""
    write(pytester, broken="id: [unclosed\n")
    suite().assert_outcomes(failed=2)
    baseline = pytester.path / "baseline.json"
    baseline.write_text((pytester.path / "out" / "matrix.json").read_text())
    again = suite(f"--baseline={baseline}")
    again.assert_outcomes(failed=2)
    assert again.ret == pytest.ExitCode.TESTS_FAILED
    again.stdout.fnmatch_lines(["*failure(s) outside the matrix*fail the session whatever the baseline says"])


# -- what collection made is out of the garbage collector's sight until the session ends ----------
def test_collected_objects_are_frozen_for_the_session_and_thawed_after_it(pytester, suite):
    """plugin/hooks.py freezes what collection made (the full collections of a run skip it) and
    unfreezes it when the session is cleaned up, after pytest's last collection: nothing stays frozen."""
    import gc

    write(pytester, pid1=scenario("pid1"))
    pytester.makeconftest("import gc\n"
                          "def pytest_sessionfinish(session):\n"
                          "    print('frozen during the session:', gc.get_freeze_count() > 0)\n")
    assert gc.get_freeze_count() == 0
    result = suite("--collect-only", "-q", "-s")
    result.stdout.fnmatch_lines(["frozen during the session: True"])
    assert gc.get_freeze_count() == 0
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")  # a suite without scenarios: left alone
    plain = pytester.runpytest("-p", "conformance.plugin.hooks", "-p", "no:cacheprovider", "-s",
                               "-W", "ignore::pytest.PytestAssertRewriteWarning", "test_plain.py")
    plain.stdout.fnmatch_lines(["*frozen during the session: False"])
    assert plain.ret == pytest.ExitCode.OK and gc.get_freeze_count() == 0


def test_everything_is_frozen_again_when_the_process_exits(pytester, monkeypatch):
    """At the interpreter's exit the plugin freezes the process's objects (hooks._freeze_at_exit): the
    collections of the shut-down would walk them all for nothing.  Seen from an exit handler that
    runs after the plugin's (registered before it, by the conftest), in a process of its own."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("OCI_CONFORMANCE_TAG", "collect-test")
    write(pytester, pid1=scenario("pid1"))
    pytester.makeconftest("import atexit, gc, os\n"
                          "@atexit.register\n"
                          "def _after_the_plugins_handler():\n"
                          "    os.write(1, b'frozen at exit: %d\\n' % (gc.get_freeze_count() > 0))\n")
    args = ("-p", "conformance.plugin.hooks", "-p", "no:cacheprovider", "--scenarios", "scen",
            f"--runtime={MISSING_A}", "--collect-only", "-q")
    with_scenarios = pytester.runpytest_subprocess(*args, "scen")
    with_scenarios.stdout.fnmatch_lines(["frozen at exit: 1"])
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")  # a suite without scenarios: left alone
    plain = pytester.runpytest_subprocess(*args, "test_plain.py")
    plain.stdout.fnmatch_lines(["frozen at exit: 0"])
