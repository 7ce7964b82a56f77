"""The compatibility matrix: runtimes × scenarios, as JSON, Markdown, HTML and terminal text.

The JSON shape is a contract (shared/DESIGN.md): ``schema``, ``host``,
``hosts``, ``runtimes`` and ``results`` (one per scenario × runtime × host,
with verdict and evidence).  The other formats are views of that document,
so a matrix can be re-rendered (or compared) from a saved JSON alone.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict

from tabulate import tabulate

SCHEMA_VERSION = 1
SYMBOL = {"pass": "pass", "fail": "FAIL", "skip": "skip", "error": "ERROR"}
MD_SYMBOL = {"pass": "✅ pass", "fail": "❌ fail", "skip": "⏭ skip", "error": "⚠️ error"}


def build_document(results: list[dict[str, Any]], host: dict[str, Any], runtimes: dict[str, Any],
                   hosts: dict[str, Any] | None = None,
                   host_runtimes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The matrix document; results are sorted so two runs diff cleanly.

    Negative-control runs (ref with switches off, marked by ``disabled``) go
    to their own list: they answer "what breaks when X is off", not "does
    this runtime isolate".
    """
    key = lambda r: (r["scenario"], r["runtime"], r["host"])  # noqa: E731
    return {
        "schema": SCHEMA_VERSION,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": host,
        "hosts": hosts if hosts is not None else {"local": host},
        "runtimes": runtimes,
        "host_runtimes": host_runtimes if host_runtimes is not None else {"local": runtimes},
        "results": sorted(({**r, "area": area(r.get("tags", []))} for r in results if not r.get("disabled")),
                          key=key),
        "controls": sorted((r for r in results if r.get("disabled")), key=key),
    }


def control_rows(doc: dict[str, Any]) -> list[list[str]]:
    """[switches off, scenario, proven?, verdict, evidence] per negative control."""
    rows = []
    for r in sorted(doc.get("controls", []), key=lambda r: ("+".join(r["disabled"]), r["scenario"])):
        proven = {"fail": "yes", "skip": "skipped"}.get(r["verdict"], "NO")
        rows.append(["+".join(r["disabled"]), r["scenario"], proven, r["verdict"], r["evidence"]])
    return rows


# -- areas ----------------------------------------------------------------------
#: The matrix's areas in display order, and the DESIGN.md tags that belong to each.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("namespaces", ("pid", "net", "mnt", "uts", "ipc", "user", "cgroupns", "time")),
    ("cgroups", ("memory", "pids", "cpu", "io")),
    ("rootfs/overlay", ("overlay", "rootfs", "pivot_root", "readonly-rootfs")),
    ("security", ("masked-paths", "readonly-paths", "devices", "caps", "seccomp", "nnp", "rlimits", "process", "cve")),
    ("lifecycle", ("lifecycle", "state", "hooks", "exit-code")),
)
OTHER_AREA = "other"
_AREA_OF_TAG = {tag: name for name, tags in AREAS for tag in tags}


def area(tags: list[str] | tuple[str, ...]) -> str:
    """A scenario's area: the area of its first tag that has one (authors list the main tag first)."""
    return next((_AREA_OF_TAG[t] for t in tags if t in _AREA_OF_TAG), OTHER_AREA)


# -- the grid ---------------------------------------------------------------------
def column(result: dict[str, Any]) -> str:
    return result["runtime"] if result["host"] == "local" else f"{result['runtime']}@{result['host']}"


def columns(doc: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    for name in doc["runtimes"]:
        seen.append(name)
    for r in doc["results"]:
        if column(r) not in seen:
            seen.append(column(r))
    return [c for c in seen if any(column(r) == c for r in doc["results"])]


Cells = Dict[str, Dict[str, Any]]  # {column: result} for one scenario


def grid(doc: dict[str, Any]) -> tuple[list[str], dict[str, Cells]]:
    """(columns, {scenario: {column: result}})."""
    rows: dict[str, Cells] = {}
    for r in doc["results"]:
        rows.setdefault(r["scenario"], {})[column(r)] = r
    return columns(doc), rows


def grouped(doc: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[tuple[str, Cells]]]]]:
    """(columns, [(area, [(scenario, cells), …]), …]) in AREAS order, scenarios sorted."""
    cols, rows = grid(doc)
    by_area: dict[str, list[tuple[str, Cells]]] = {}
    for scenario in sorted(rows):
        cells = rows[scenario]
        by_area.setdefault(area(next(iter(cells.values())).get("tags", [])), []).append((scenario, cells))
    order = [name for name, _ in AREAS] + [OTHER_AREA]
    return cols, [(name, by_area[name]) for name in order if name in by_area]


def differs(cells: Cells) -> bool:
    """True when runtimes disagree on a scenario; a skip is a host reason, not a disagreement."""
    return len({r["verdict"] for r in cells.values()} - {"skip"}) > 1


def count(results: Any) -> dict[str, int]:
    counts = {"pass": 0, "fail": 0, "skip": 0, "error": 0}
    for r in results:
        counts[r["verdict"]] += 1
    return counts


def totals(doc: dict[str, Any]) -> dict[str, dict[str, int]]:
    cols, rows = grid(doc)
    return {c: count(cells[c] for cells in rows.values() if c in cells) for c in cols}


def _pass_ratio(counts: dict[str, int]) -> str:
    return f"{counts['pass']}/{sum(counts.values())} pass"


def _table(doc: dict[str, Any], symbols: dict[str, str], fmt: str) -> str:
    """One row per scenario under a heading row per area (which carries the area's pass counts)."""
    cols, areas = grouped(doc)
    strong = (lambda t: f"**{t}**") if fmt == "github" else (lambda t: f"[{t}]")
    body = []
    for name, scenarios in areas:
        body.append([strong(name), ""] + [strong(_pass_ratio(count(cells[c] for _, cells in scenarios if c in cells)))
                                          for c in cols])
        for scenario, cells in scenarios:
            tags = next(iter(cells.values())).get("tags", [])
            label = f"{scenario} ≠" if differs(cells) else scenario
            body.append([label, ",".join(tags)] + [symbols[cells[c]["verdict"]] if c in cells else "—" for c in cols])
    tot = totals(doc)
    body.append([strong("total"), ""] + [strong(_pass_ratio(tot[c])) for c in cols])
    return tabulate(body, headers=["scenario", "tags", *cols], tablefmt=fmt)


def runtime_notes(rt: dict[str, Any]) -> str:
    return "; ".join(rt.get("adaptations") or []) or rt.get("error") or "—"


def render_terminal(doc: dict[str, Any]) -> str:
    host = doc["host"]
    head = f"host: kernel {host.get('kernel')}, cgroup {host.get('cgroup')}; " + "; ".join(
        f"{n} {rt.get('version')}" for n, rt in doc["runtimes"].items())
    text = head + "\n" + _table(doc, SYMBOL, "simple") if doc["results"] else head
    different = sum(1 for _, scenarios in grouped(doc)[1] for _, cells in scenarios if differs(cells))
    if different:
        text += f"\n≠ marks the {different} scenario(s) whose verdicts differ between runtimes"
    controls = control_rows(doc)
    if controls:
        proven = sum(1 for r in controls if r[2] == "yes")
        text += (f"\n\nnegative controls (ref with the switch off must FAIL): {proven}/{len(controls)} proven\n"
                 + tabulate([r[:4] for r in controls], headers=["switch off", "scenario", "proven", "verdict"],
                            tablefmt="simple"))
    return text


def _failures(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in doc["results"] if r["verdict"] in ("fail", "error")]


def render_markdown(doc: dict[str, Any]) -> str:
    host = doc["host"]
    lines = ["# Container runtime conformance matrix", "",
             f"Generated {doc.get('generated', '')} on {host.get('os', '')}, kernel `{host.get('kernel')}`, "
             f"cgroup **{host.get('cgroup')}**.", "", "| runtime | version | path | config ociVersion | adaptations |",
             "|---|---|---|---|---|"]
    for name, rt in doc["runtimes"].items():
        lines.append(f"| {name} | {rt.get('version')} | `{rt.get('path')}` | {rt.get('spec_version', '')} | "
                     f"{_md_escape(runtime_notes(rt))} |")
    others = {spec: prof for spec, prof in (doc.get("hosts") or {}).items() if spec != "local"}
    if others:
        lines += ["", "| host | kernel | cgroup | runtimes |", "|---|---|---|---|"]
        for spec, prof in others.items():
            rts = (doc.get("host_runtimes") or {}).get(spec) or {}
            lines.append(f"| {spec} | {prof.get('kernel', prof.get('error', ''))} | {prof.get('cgroup', '')} | "
                         + _md_escape(", ".join(f"{n} {rt.get('version')}" for n, rt in rts.items())) + " |")
    lines += ["", "Rows are grouped by area; an area's row counts its passes. "
              "A row marked ≠ differs between runtimes; its evidence is listed below the table.", "",
              _table(doc, MD_SYMBOL, "github"), ""]
    failures = _failures(doc)
    skips = [r for r in doc["results"] if r["verdict"] == "skip"]
    if failures:
        lines += ["## Failures and errors", ""]
        lines += [f"- **{r['scenario']}** on {column(r)} ({r['verdict']}): {_md_escape(r['evidence'])}"
                  for r in failures]
        lines.append("")
    controls = control_rows(doc)
    if controls:
        lines += ["## Negative controls: what breaks when a primitive is off", "",
                  "Each scenario run on the reference runtime with its control switch off must fail; "
                  "the evidence shows what the scenario saw.", "",
                  tabulate([[c[0], c[1], c[2], _md_escape(c[4])] for c in controls],
                           headers=["switch off", "scenario", "fails as it must", "evidence"], tablefmt="github"), ""]
    if skips:
        lines += ["## Skipped (host reasons)", ""]
        lines += [f"- **{r['scenario']}** on {column(r)}: {_md_escape(r['evidence'])}" for r in skips]
        lines.append("")
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_all(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write matrix.json, matrix.md and matrix.html; returns their paths."""
    from .matrix_html import render_html  # lazy: only needed here

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "matrix.json", out_dir / "matrix.md", out_dir / "matrix.html"]
    paths[0].write_text(json.dumps(doc, indent=2) + "\n")
    paths[1].write_text(render_markdown(doc))
    paths[2].write_text(render_html(doc))
    return paths
