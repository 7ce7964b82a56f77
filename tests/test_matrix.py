"""Matrix renderers: the JSON contract, Markdown, HTML and the terminal table."""
from __future__ import annotations

import json

from conformance.model import areas
from conformance.reporting import document as matrix
from conformance.reporting import text as views
from conformance.reporting.files import write_all
from conformance.reporting.html import render_html

HOST = {"kernel": "6.1.0", "cgroup": "hybrid", "os": "Debian"}
RUNTIMES = {"runc": {"path": "/usr/sbin/runc", "version": "1.1.5", "spec_version": "1.0.2-dev", "adaptations": []},
            "crun": {"path": "/usr/bin/crun", "version": "1.8.1", "spec_version": "1.0.0",
                     "adaptations": ["private mount namespace"]}}


def _result(scenario, runtime, verdict, evidence="ok"):
    return {"scenario": scenario, "runtime": runtime, "host": "local", "verdict": verdict,
            "tags": ["pid"], "duration_s": 0.01, "evidence": evidence, "title": "T", "control": ["pid"]}


def _doc():
    results = [_result("pid-a", "runc", "pass"), _result("pid-a", "crun", "fail", "stdout: expected '1'; observed '7'"),
               _result("net-b", "runc", "pass"), _result("net-b", "crun", "skip", "host lacks userns")]
    return matrix.build_document(results, HOST, RUNTIMES)


def test_json_document_follows_the_contract():
    doc = json.loads(json.dumps(_doc()))
    assert doc["schema"] == 1 and doc["host"] == HOST and doc["hosts"] == {"local": HOST}
    assert doc["runtimes"]["runc"]["version"] == "1.1.5"
    for r in doc["results"]:
        assert {"scenario", "runtime", "host", "verdict", "tags", "duration_s", "evidence"} <= set(r)
        assert r["verdict"] in ("pass", "fail", "skip", "error")
    assert [r["scenario"] for r in doc["results"]] == sorted(r["scenario"] for r in doc["results"])


def test_markdown_has_table_totals_differences_and_evidence():
    md = views.render_markdown(_doc())
    assert "| scenario" in md and "| runc" in md.replace("  ", " ")
    assert "pid-a ≠" in md, "a row whose verdicts differ is marked"
    assert "net-b ≠" not in md, "a skip is a host reason, not a difference"
    assert "observed '7'" in md and "host lacks userns" in md
    assert "2/2 pass" in md and "0/2 pass" in md and "private mount namespace" in md


def test_html_is_self_contained_with_colours_and_evidence():
    html = render_html(_doc())
    assert html.startswith("<!doctype html>") and "<link" not in html and "src=" not in html
    assert "class=\"v fail\"" in html and "class=\"v pass\"" in html
    assert "title=\"stdout: expected &#x27;1&#x27;; observed &#x27;7&#x27;\"" in html
    assert "row differs" in html and "6.1.0" in html


def test_terminal_table_lists_every_runtime():
    text = views.render_terminal(_doc())
    assert "runc" in text and "crun" in text and "FAIL" in text and "total" in text


def test_write_all_writes_three_files(tmp_path):
    paths = write_all(_doc(), tmp_path / "out")
    assert [p.name for p in paths] == ["matrix.json", "matrix.md", "matrix.html"]
    assert json.loads(paths[0].read_text())["schema"] == 1


def test_areas_follow_the_first_tag_that_has_one():
    assert areas.area(["mnt", "pid", "caps"]) == "namespaces"
    assert areas.area(["memory", "exit-code"]) == "cgroups"
    assert areas.area(["readonly-rootfs", "rootfs"]) == "rootfs/overlay"
    assert areas.area(["nnp"]) == "security" and areas.area(["cve", "pid"]) == "security"
    assert areas.area(["exit-code"]) == "lifecycle" and areas.area(["made-up"]) == "other"
    tags = {t for _, members in areas.AREAS for t in members}
    from conformance.catalog.loader import scenario_schema
    assert set(scenario_schema()["properties"]["tags"]["items"]["enum"]) <= tags, "every DESIGN tag has an area"


def _grouped_doc():
    tagged = lambda s, rt, v, tags: {**_result(s, rt, v), "tags": tags}  # noqa: E731
    results = [tagged("pid-a", "runc", "pass", ["pid"]), tagged("pid-a", "crun", "fail", ["pid"]),
               tagged("mem-b", "runc", "pass", ["memory"]), tagged("mem-b", "crun", "pass", ["memory"]),
               tagged("nnp-c", "runc", "pass", ["nnp"]), tagged("nnp-c", "crun", "skip", ["nnp"])]
    return matrix.build_document(results, HOST, RUNTIMES)


def test_rows_are_grouped_by_area_with_counts_per_column():
    doc = _grouped_doc()
    assert {r["scenario"]: r["area"] for r in doc["results"]} == {
        "pid-a": "namespaces", "mem-b": "cgroups", "nnp-c": "security"}
    cols, areas = matrix.grouped(doc)
    assert cols == ["runc", "crun"] and [a for a, _ in areas] == ["namespaces", "cgroups", "security"]
    md = views.render_markdown(doc)
    lines = [line for line in md.splitlines() if line.startswith("|")]
    order = [next(w for w in ("**namespaces**", "pid-a", "**cgroups**", "mem-b", "**security**", "nnp-c",
                              "**total**") if w in line) for line in lines if any(
        w in line for w in ("**namespaces**", "pid-a", "**cgroups**", "mem-b", "**security**", "nnp-c", "**total**"))]
    assert order == ["**namespaces**", "pid-a", "**cgroups**", "mem-b", "**security**", "nnp-c", "**total**"]
    namespaces = next(line for line in lines if "**namespaces**" in line)
    assert "**1/1 pass**" in namespaces and "**0/1 pass**" in namespaces
    total = next(line for line in lines if "**total**" in line)
    assert "**3/3 pass**" in total and "**1/3 pass**" in total
    text = views.render_terminal(doc)
    assert "[namespaces]" in text and "[cgroups]" in text and "pid-a ≠" in text and "nnp-c ≠" not in text
    assert "≠ marks the 1 scenario(s)" in text


def test_html_groups_areas_and_keeps_differs_highlight():
    html = render_html(_grouped_doc())
    assert html.count("<tbody class='area'>") == 3
    assert "<th>namespaces</th><th>1/1 pass</th><th>0/1 pass</th>" in html
    assert html.index(">namespaces<") < html.index(">cgroups<") < html.index(">security<")
    assert "class='row differs'" in html and html.count("class='row differs'") == 1


def test_other_hosts_are_profiled_in_html_and_markdown():
    results = [_result("pid-a", "runc", "pass")]
    results[0]["host"] = "qemu://cgroup-v2"
    doc = matrix.build_document(results, HOST, RUNTIMES,
                                hosts={"local": HOST, "qemu://cgroup-v2": {"kernel": "6.1.0-56-amd64", "cgroup": "v2"}},
                                host_runtimes={"qemu://cgroup-v2": {"crun": {"version": "1.8.1", "adaptations": []}}})
    html, md = render_html(doc), views.render_markdown(doc)
    for text in (html, md):
        assert "qemu://cgroup-v2" in text and "6.1.0-56-amd64" in text and "crun 1.8.1" in text
