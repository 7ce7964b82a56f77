"""Matrix renderers: the JSON contract, Markdown, HTML and the terminal table."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

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
    assert "2/2 hold" in md and "0/1 hold" in md and "private mount namespace" in md


def test_html_is_self_contained_with_colours_and_evidence():
    html = render_html(_doc())
    assert html.startswith("<!doctype html>") and "<link" not in html and "src=" not in html
    assert "class=\"v fail\"" in html and "class=\"v pass\"" in html
    assert "title=\"stdout: expected &#x27;1&#x27;; observed &#x27;7&#x27;\"" in html
    assert "row differs" in html and "6.1.0" in html


def test_terminal_table_lists_every_runtime():
    text = views.render_terminal(_doc())
    assert "runc" in text and "crun" in text and "FAIL" in text and "total" in text


def test_the_grid_reads_as_tabulate_with_its_number_parsing(monkeypatch):
    """The table is rendered without tabulate's parsing of numbers (its cost); every column holds words,
    so nothing moves: not even a numeric scenario id, which a column of numbers would right-align."""
    results = [_result("pid-a", "runc", "pass"), _result("123", "runc", "fail"), _result("7", "crun", "pass")]
    doc = matrix.build_document(results, HOST, RUNTIMES)
    fast = views.render_terminal(doc), views.render_markdown(doc)
    parsing = views.tabulate

    def with_number_parsing(*args, **kw):
        kw.pop("disable_numparse", None)
        return parsing(*args, **kw)

    monkeypatch.setattr(views, "tabulate", with_number_parsing)
    assert fast == (views.render_terminal(doc), views.render_markdown(doc))
    assert "\n123 " in fast[0]


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
    assert "**1/1 hold**" in namespaces and "**0/1 hold**" in namespaces
    total = next(line for line in lines if "**total**" in line)
    assert "**3/3 hold**" in total and "**1/2 hold**" in total
    text = views.render_terminal(doc)
    assert "[namespaces]" in text and "[cgroups]" in text and "pid-a ≠" in text and "nnp-c ≠" not in text
    assert "≠ marks the 1 scenario(s)" in text


def test_html_groups_areas_and_keeps_differs_highlight():
    html = render_html(_grouped_doc())
    assert html.count("<tbody class='area' id='area-") == 3
    assert "<th>namespaces</th><th>1/1 hold</th><th>0/1 hold</th>" in html
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


class _Page(HTMLParser):
    """The parts of matrix.html the overview tests read: every id, and the overview's cells."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.overview: list[dict[str, str]] = []  # per heat cell: href, text, style, title
        self.rows: list[list[dict[str, str]]] = []  # the overview's rows, header cell first
        self._in_overview = False
        self._cell: dict[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "table":
            self._in_overview = a.get("class") == "overview"
        elif self._in_overview and tag == "tr":
            self.rows.append([])
        elif self._in_overview and tag in ("td", "th") and self.rows:
            self._cell = {"tag": tag, "style": a.get("style", ""), "title": a.get("title", ""), "text": ""}
            self.rows[-1].append(self._cell)
        elif self._cell is not None and tag == "a":
            self._cell["href"] = a.get("href", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_overview = False
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data


def _overview_doc():
    """Three columns and three areas whose pass ratios differ: 1/1, 0/1, 1/2, all skipped, none."""
    tagged = lambda s, rt, v, tags: {**_result(s, rt, v), "tags": tags}  # noqa: E731
    results = [tagged("pid-a", "runc", "pass", ["pid"]), tagged("pid-a", "crun", "fail", ["pid"]),
               tagged("pid-b", "runc", "pass", ["pid"]), tagged("pid-b", "crun", "pass", ["pid"]),
               tagged("pid-c", "runc", "skip", ["pid"]), tagged("pid-c", "crun", "error", ["pid"]),
               tagged("mem-a", "runc", "pass", ["memory"]), tagged("mem-a", "crun", "skip", ["memory"]),
               tagged("ro-a", "runc", "fail", ["readonly-rootfs"]), tagged("ro-a", "crun", "pass", ["rootfs"])]
    extra = {**_result("pid-a", "runsc", "pass"), "host": "qemu://cgroup-v2"}
    return matrix.build_document(results + [extra], HOST, RUNTIMES)


def _overview(doc):
    page = _Page()
    page.feed(render_html(doc))
    header, *body = page.rows
    cols = [c["text"] for c in header[1:]]
    return page, cols, {row[0]["text"]: dict(zip(cols, row[1:])) for row in body}


def test_html_opens_with_an_overview_of_areas_by_columns():
    doc = _overview_doc()
    html = render_html(doc)
    page, cols, rows = _overview(doc)
    assert cols == ["runc", "crun", "runsc@qemu://cgroup-v2"]
    assert list(rows) == ["namespaces", "cgroups", "rootfs/overlay"], "areas in AREAS order"
    assert html.index("table class='overview'") < html.index("<tbody class='area'"), "overview before the detail"


def test_overview_cells_link_to_the_areas_of_the_detail_table():
    page, cols, rows = _overview(_overview_doc())
    for cells in rows.values():
        for cell in cells.values():
            assert cell["href"].startswith("#") and cell["href"][1:] in page.ids, cell
        assert len({cell["href"] for cell in cells.values()}) == 1, "one area, one anchor"
    assert len({next(iter(cells.values()))["href"] for cells in rows.values()}) == len(rows)
    html = render_html(_overview_doc())
    for name, cells in rows.items():  # the anchor is the tbody that holds exactly that area's rows
        anchor = next(iter(cells.values()))["href"][1:]
        assert f"<tbody class='area' id='{anchor}'><tr class='area'><th>{name}</th>" in html


def test_overview_counts_match_the_document():
    doc = _overview_doc()
    _, cols, rows = _overview(doc)
    for name, cells in rows.items():
        for col, cell in cells.items():
            mine = [r for r in doc["results"] if r["area"] == name and matrix.column(r) == col]
            passes = sum(r["verdict"] == "pass" for r in mine)
            judged = sum(r["verdict"] in ("pass", "fail", "error") for r in mine)
            skips = sum(r["verdict"] == "skip" for r in mine)
            expected = (f"{passes}/{judged}" if judged else "—") + (f"+{skips} skip" if skips else "")
            assert cell["text"] == expected, (name, col)
    assert rows["namespaces"]["crun"]["text"] == "1/3" and rows["namespaces"]["runc"]["text"] == "2/2+1 skip"
    assert rows["cgroups"]["crun"]["text"] == "—+1 skip" and rows["cgroups"]["runsc@qemu://cgroup-v2"]["text"] == "—"


def _lightness(style: str) -> int | None:
    found = re.search(r"background:hsl\(\d+,\d+%,(\d+)%\)", style)
    return int(found.group(1)) if found else None


def test_overview_colours_follow_the_pass_ratio_on_one_hue():
    _, _, rows = _overview(_overview_doc())
    full, third, none = rows["namespaces"]["runc"], rows["namespaces"]["crun"], rows["rootfs/overlay"]["runc"]
    assert len({full["style"], third["style"], none["style"]}) == 3, "different ratios, different colours"
    assert _lightness(full["style"]) < _lightness(third["style"]) < _lightness(none["style"]), "darker = more pass"
    hues = {re.search(r"hsl\((\d+),", c["style"]).group(1) for cells in rows.values() for c in cells.values()
            if "hsl(" in c["style"]}
    assert len(hues) == 1, "one hue: the ratio is carried by lightness, readable without telling hues apart"
    unjudged = rows["cgroups"]["crun"]
    assert _lightness(unjudged["style"]) is None and "not judged: 1 skip" in unjudged["title"]
    assert rows["namespaces"]["runc"]["style"] == rows["cgroups"]["runc"]["style"], "same ratio, same colour"


def test_overview_and_page_stay_self_contained():
    html = render_html(_overview_doc())
    assert "<link" not in html and "src=" not in html and "url(" not in html and "http" not in html


def test_an_engine_column_that_differs_from_its_bare_twin_is_listed_with_its_evidence():
    """containerd/runc against runc on the same host and scenario: a changed verdict is listed in Markdown and
    HTML with the engine cell's evidence; an agreeing cell, and a column without an engine, are not."""
    runtimes = {**RUNTIMES, "containerd/runc": {**RUNTIMES["runc"], "lane": "containerd", "engine": "containerd 1.6.20",
                                                "shim": "io.containerd.runc.v2"}}
    results = [_result("pid-a", "runc", "pass"), _result("pid-a", "containerd/runc", "fail", "bundle: the shim's"),
               _result("net-b", "runc", "pass"), _result("net-b", "containerd/runc", "pass"),
               _result("pid-a", "crun", "fail")]
    doc = matrix.build_document(results, HOST, runtimes)
    stacked = matrix.stack_differences(doc)
    assert [(b["runtime"], e["runtime"], e["scenario"]) for b, e in stacked] == [("runc", "containerd/runc", "pid-a")]
    md = views.render_markdown(doc)
    assert "## Where the stack changes the verdict" in md
    assert "**pid-a** on local: runc pass, containerd/runc fail: bundle: the shim's" in md
    assert "Where the stack changes the verdict" in render_html(doc)
    assert "Where the stack changes" not in views.render_markdown(_doc())
