"""The matrix as text: Markdown (matrix.md, a CI job summary) and the terminal summary."""
from __future__ import annotations

from typing import Any

from tabulate import tabulate

from .document import column, control_rows, count, differs, grouped, runtime_notes, totals

SYMBOL = {"pass": "pass", "fail": "FAIL", "skip": "skip", "error": "ERROR"}
MD_SYMBOL = {"pass": "✅ pass", "fail": "❌ fail", "skip": "⏭ skip", "error": "⚠️ error"}


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
