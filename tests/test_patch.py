"""Patch semantics: merge mappings, replace lists, null deletes, $append/$remove."""
import pytest

from conformance.host.patch import PatchError, apply_patch


def test_mappings_merge_recursively():
    base = {"linux": {"a": 1, "b": {"c": 2}}, "keep": True}
    assert apply_patch(base, {"linux": {"b": {"d": 3}}}) == {"linux": {"a": 1, "b": {"c": 2, "d": 3}}, "keep": True}


def test_null_deletes_and_lists_replace():
    base = {"a": 1, "l": [1, 2]}
    assert apply_patch(base, {"a": None, "l": [3]}) == {"l": [3]}


def test_append_and_remove():
    base = {"ns": [{"type": "pid"}, {"type": "network"}]}
    out = apply_patch(base, {"ns": {"$remove": [{"type": "network"}], "$append": [{"type": "user"}]}})
    assert out == {"ns": [{"type": "pid"}, {"type": "user"}]}


def test_append_creates_a_missing_list():
    assert apply_patch({}, {"l": {"$append": [1]}}) == {"l": [1]}


def test_remove_of_a_missing_item_is_an_error():
    with pytest.raises(PatchError, match=r"config\.ns: \$remove of items not in the base config"):
        apply_patch({"ns": []}, {"ns": {"$remove": ["x"]}})


def test_list_op_on_a_non_list_is_an_error():
    with pytest.raises(PatchError, match="need a list"):
        apply_patch({"ns": {"a": 1}}, {"ns": {"$append": [1]}})


def test_base_is_not_modified():
    base = {"a": {"b": [1]}}
    apply_patch(base, {"a": {"b": {"$append": [2]}, "c": 1}})
    assert base == {"a": {"b": [1]}}
