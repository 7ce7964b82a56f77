"""Scenario files: validation against the schema, with errors naming file and line."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.catalog.loader import load_scenarios
from conformance.model.errors import ScenarioError
from conformance.model.scenario import check_unique_ids
from tests.conftest import REPO, write_scenarios

GOOD = """
id: good-one
title: A good scenario
tags: [pid]
control: [pid]
run: echo $$
expect:
  exit: 0
  stdout: "1"
"""


def _error(tmp_path: Path, body: str) -> ScenarioError:
    write_scenarios(tmp_path, {"s.yaml": body})
    with pytest.raises(ScenarioError) as info:
        load_scenarios(tmp_path / "s.yaml")
    return info.value


def test_every_shipped_scenario_is_valid_and_ids_are_unique():
    scenarios = [s for p in sorted((REPO / "scenarios").glob("*.yaml")) for s in load_scenarios(p)]
    assert len(scenarios) >= 14
    check_unique_ids(scenarios)
    assert all(s.control for s in scenarios), "every scenario names its negative control"


def test_a_good_scenario_becomes_a_typed_object(tmp_path):
    write_scenarios(tmp_path, {"s.yaml": GOOD})
    (sc,) = load_scenarios(tmp_path / "s.yaml")
    assert sc.args == ("sh", "-c", "echo $$")
    assert sc.expect.exit == (0,) and sc.expect.stdout.equals == "1"
    assert sc.line == 2  # after the schema header comment


def test_malformed_yaml_names_file_and_line(tmp_path):
    err = _error(tmp_path, GOOD + "expect: [unclosed\n")
    assert err.path.endswith("s.yaml") and err.line == 11
    assert "not valid YAML" in str(err)


def test_unknown_key_is_reported_at_its_own_line(tmp_path):
    err = _error(tmp_path, GOOD.replace("run: echo $$", "run: echo $$\nrunn: typo"))
    assert err.line == 7
    assert "unknown key 'runn'" in str(err) and "allowed:" in str(err)


def test_unknown_key_in_a_host_fact(tmp_path):
    body = GOOD + "  host:\n    - namespace_differs: pid\n    - cgroup: pids.max\n      equal: '10'\n"
    err = _error(tmp_path, body)
    assert err.line == 13, str(err)
    assert "equal" in str(err)


def test_wrong_type_names_the_field(tmp_path):
    err = _error(tmp_path, GOOD.replace("exit: 0", "exit: zero"))
    assert err.line == 8 and "expect.exit" in str(err)


def test_missing_field(tmp_path):
    err = _error(tmp_path, GOOD.replace("control: [pid]\n", ""))
    assert "'control' is a required property" in str(err)


def test_unknown_tag(tmp_path):
    err = _error(tmp_path, GOOD.replace("tags: [pid]", "tags: [pid, teleport]"))
    assert err.line == 4 and "teleport" in str(err)


def test_duplicate_key(tmp_path):
    err = _error(tmp_path, GOOD + "title: again\n")
    assert err.line == 10 and "duplicate key 'title'" in str(err)


def test_duplicate_ids_across_documents(tmp_path):
    write_scenarios(tmp_path, {"s.yaml": GOOD + "---\n" + GOOD})
    with pytest.raises(ScenarioError, match="duplicate scenario id 'good-one'"):
        check_unique_ids(load_scenarios(tmp_path / "s.yaml"))


def test_error_message_is_one_line(tmp_path):
    err = _error(tmp_path, GOOD.replace("exit: 0", "exit: zero").replace("tags: [pid]", "tags: [x]"))
    assert "\n" not in str(err) and "(and 1 more)" in str(err)


# -- the cache of loaded scenarios (catalog/loaded_cache.py) ------------------------------
@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private cache root, and the cache's directory computed afresh for it."""
    from conformance.catalog import loaded_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    loaded_cache._cache_dir.cache_clear()
    yield tmp_path / "cache" / "oci-conformance" / "loaded-scenarios"
    loaded_cache._cache_dir.cache_clear()


def test_a_file_loaded_once_comes_back_from_the_cache_equal(tmp_path: Path, own_cache: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    from conformance.catalog import loaded_cache

    write_scenarios(tmp_path, {"s.yaml": GOOD})
    first = loaded_cache.loaded(tmp_path / "s.yaml")
    assert first == load_scenarios(tmp_path / "s.yaml")
    assert len(list(own_cache.rglob("*"))) == 2  # the code's directory and one entry

    def no_parsing(path: Path) -> list:
        raise AssertionError("parsed again although the file and the code are unchanged")

    monkeypatch.setattr(loaded_cache, "load_scenarios", no_parsing)
    assert loaded_cache.loaded(tmp_path / "s.yaml") == first


def test_an_edited_file_is_loaded_again(tmp_path: Path, own_cache: Path):
    from conformance.catalog import loaded_cache

    write_scenarios(tmp_path, {"s.yaml": GOOD})
    assert loaded_cache.loaded(tmp_path / "s.yaml")[0].title == "A good scenario"
    write_scenarios(tmp_path, {"s.yaml": GOOD.replace("A good scenario", "Edited, same size!")})
    assert loaded_cache.loaded(tmp_path / "s.yaml")[0].title == "Edited, same size!"


def test_a_file_that_does_not_load_raises_every_time_and_is_not_kept(tmp_path: Path, own_cache: Path):
    from conformance.catalog import loaded_cache

    write_scenarios(tmp_path, {"s.yaml": GOOD.replace("tags: [pid]", "tags: [pid]\nbogus: 1")})
    for _ in range(2):
        with pytest.raises(ScenarioError) as info:
            loaded_cache.loaded(tmp_path / "s.yaml")
        assert "bogus" in str(info.value) and "s.yaml" in str(info.value)
    assert not any(p.is_file() for p in own_cache.rglob("*"))


def test_another_version_of_the_code_uses_its_own_entries(tmp_path: Path, own_cache: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """The directory is named by the code that loads: a change to it (here: the schema) is a miss."""
    from conformance.catalog import loaded_cache

    write_scenarios(tmp_path, {"s.yaml": GOOD})
    loaded_cache.loaded(tmp_path / "s.yaml")
    schema = tmp_path / "schema.json"
    schema.write_bytes(loaded_cache.SCHEMA_PATH.read_bytes() + b"\n")
    monkeypatch.setattr(loaded_cache, "SCHEMA_PATH", schema)
    loaded_cache._cache_dir.cache_clear()
    loaded_cache.loaded(tmp_path / "s.yaml")
    assert len([d for d in own_cache.iterdir() if d.is_dir()]) == 2


def test_a_catalog_whose_files_did_not_change_comes_back_from_one_entry(tmp_path: Path, own_cache: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """loaded_all: the second collection of an unchanged catalog reads one entry, not one per file, and
    gets the same scenarios; a file that does not load is left out both times (its collection raises)."""
    from conformance.catalog import loaded_cache

    write_scenarios(tmp_path, {"a.yaml": GOOD, "b.yaml": GOOD.replace("id: good", "id: other"),
                               "bad.yaml": GOOD.replace("tags: [pid]", "tags: [pid]\nbogus: 1")})
    paths = sorted(tmp_path.glob("*.yaml"))
    first = loaded_cache.loaded_all(tmp_path, paths)
    assert sorted(p.name for p in first) == ["a.yaml", "b.yaml"]
    assert first[tmp_path / "a.yaml"] == load_scenarios(tmp_path / "a.yaml")

    def no_loading(path: Path) -> list:
        raise AssertionError(f"{path} loaded one by one although no file changed")

    with monkeypatch.context() as m:
        m.setattr(loaded_cache, "loaded", no_loading)
        assert loaded_cache.loaded_all(tmp_path, paths) == first


def test_a_catalog_entry_is_replaced_when_a_file_changes(tmp_path: Path, own_cache: Path):
    from conformance.catalog import loaded_cache

    write_scenarios(tmp_path, {"a.yaml": GOOD, "b.yaml": GOOD.replace("id: good", "id: other")})
    paths = sorted(tmp_path.glob("*.yaml"))
    loaded_cache.loaded_all(tmp_path, paths)
    write_scenarios(tmp_path, {"b.yaml": GOOD.replace("id: good", "id: other").replace("A good", "An edited")})
    again = loaded_cache.loaded_all(tmp_path, paths)
    assert again[tmp_path / "b.yaml"][0].title.startswith("An edited")
    assert len(list(own_cache.rglob("catalog-*"))) == 1  # one per catalog directory
