"""Closed vocabularies that must agree pairwise: the schema against the code that serves each word.

A word the schema accepts but no code serves would fail at run time (or, for
a requirement, be skipped for a wrong reason); a word the code serves but the
schema refuses is dead.  One test per pair, as runc's bats ``requires`` fails
on an unknown keyword.
"""
from __future__ import annotations

from conformance.catalog.loader import scenario_schema
from conformance.host import cgroupfs, hostinfo
from conformance.host.host_setup import SETUPS
from conformance.model.scenario import FACT_KINDS, PROCESS_FACTS, SELF_JUDGED
from runtime_ref.spec import SWITCHES

SCHEMA = scenario_schema()


def test_requires_is_what_hostinfo_checks():
    assert set(SCHEMA["properties"]["requires"]["items"]["enum"]) == set(hostinfo.REQUIREMENTS)


def test_host_setup_is_what_the_harness_makes():
    assert set(SCHEMA["properties"]["host_setup"]["items"]["enum"]) == set(SETUPS)


def test_control_switches_are_the_reference_runtime_s():
    assert set(SCHEMA["$defs"]["switch_set"]["items"]["enum"]) == set(SWITCHES)


def test_host_fact_kinds_are_the_model_s():
    kinds = {req for alt in SCHEMA["$defs"]["host_fact"]["oneOf"] for req in alt["required"] if req != "layer"}
    assert kinds == set(FACT_KINDS)
    assert set(SELF_JUDGED) <= kinds and set(PROCESS_FACTS) <= kinds


def test_self_judged_facts_take_no_matchers():
    for alt in SCHEMA["$defs"]["host_fact"]["oneOf"]:
        if alt["required"][0] in SELF_JUDGED:
            assert set(alt["properties"]) == {alt["required"][0], "when"}, alt["required"]


def test_cgroup_values_are_the_ones_cgroupfs_locates():
    (alt,) = [a for a in SCHEMA["$defs"]["host_fact"]["oneOf"] if a["required"] == ["cgroup"]]
    assert set(alt["properties"]["cgroup"]["enum"]) == set(cgroupfs.VALUES)


def test_exec_like_init_groups_are_the_ones_exec_step_reads():
    from conformance.host.exec_step import LIKE_INIT
    steps = SCHEMA["properties"]["steps"]["items"]["oneOf"][1]["properties"]
    assert set(steps["exec"]["properties"]["like_init"]["items"]["enum"]) == set(LIKE_INIT)
