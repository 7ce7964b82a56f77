"""The matrix as text: Markdown (matrix.md, a CI job summary) and the terminal summary."""
from __future__ import annotations

from tabulate import tabulate

from conformance.model.verdicts import BAD, OTHER_MECHANISM, SKIP, UNOBSERVABLE

from .document import (
    column,
    control_rows,
    count,
    differs,
    grouped,
    holds_ratio,
    proof_totals,
    proofs,
    reading,
    runtime_notes,
    sandbox_note,
    stack_differences,
    totals,
    version_note,
)
from .rows import Matrix, ResultRow

SYMBOL = {"pass": "pass", "other-mechanism": "pass~", "unobservable": "unobs.", "fail": "FAIL", "skip": "skip",
          "error": "ERROR"}
MD_SYMBOL = {"pass": "✅ pass", "other-mechanism": "☑️ other mechanism", "unobservable": "👁 unobservable",
             "fail": "❌ fail", "skip": "⏭ skip", "error": "⚠️ error"}
LEGEND = ("pass: the property holds; other mechanism: it holds, provided another way than namespaces and cgroups "
          "(see the evidence); unobservable: the runtime hides where the check looks (neither pass nor fail); "
          "fail: violated; error: the runtime could not set the container up; skip: the host lacks what it needs")


def _table(doc: Matrix, symbols: dict[str, str], fmt: str) -> str:
    """One row per scenario under a heading row per area (which carries the area's pass counts)."""
    cols, areas = grouped(doc)
    def strong(text: str) -> str:
        return f"**{text}**" if fmt == "github" else f"[{text}]"

    body: list[list[str]] = []
    for name, scenarios in areas:
        body.append([strong(name), ""] + [strong(holds_ratio(count(cells[c] for _, cells in scenarios if c in cells)))
                                          for c in cols])
        for scenario, cells in scenarios:
            tags = next(iter(cells.values())).get("tags", [])
            label = f"{scenario} ≠" if differs(cells) else scenario
            body.append([label, ",".join(tags)] + [symbols.get(cells[c]["verdict"], cells[c]["verdict"])
                                                   if c in cells else "—" for c in cols])
    tot = totals(doc)
    body.append([strong("total"), ""] + [strong(holds_ratio(tot[c])) for c in cols])
    # every column holds words (an area's heading row, the total row), so tabulate types each column as
    # text whatever a cell looks like: telling it so skips its number parsing of every cell (most of its time)
    return tabulate(body, headers=["scenario", "tags", *cols], tablefmt=fmt, disable_numparse=True)


def render_terminal(doc: Matrix) -> str:
    host = doc["host"]
    head = f"host: kernel {host.get('kernel')}, cgroup {host.get('cgroup')}; " + "; ".join(
        f"{n} {version_note(rt)}" + (" (sandboxed)" if isinstance(rt.get("sandboxed"), str) else "")
        for n, rt in doc["runtimes"].items())
    text = head + "\n" + _table(doc, SYMBOL, "simple") if doc["results"] else head
    different = sum(1 for _, scenarios in grouped(doc)[1] for _, cells in scenarios if differs(cells))
    if different:
        text += f"\n≠ marks the {different} scenario(s) whose verdicts differ between runtimes"
    text += "\n" + "\n".join(f"{c}: {reading(n)}" for c, n in totals(doc).items())
    controls = control_rows(doc)
    if controls:
        proven = sum(1 for r in controls if r[3] == "yes")
        text += (f"\n\nnegative controls (ref with the switch off must FAIL): {proven}/{len(controls)} proven\n"
                 + tabulate([r[:5] for r in controls], headers=["switch off", "host", "scenario", "proven", "verdict"],
                            tablefmt="simple"))
        text += "\n" + _proof_line(doc)
        unproven = [(s, e.unproven) for s, e in sorted(proofs(doc).items()) if e.unproven]
        if unproven:
            text += "\nunproven (no control broke it, no mark says why it need not break):\n" + "\n".join(
                f"  {scenario}: {', '.join(ids)}" for scenario, ids in unproven)
    return text


def _failures(doc: Matrix) -> list[ResultRow]:
    return [r for r in doc["results"] if r["verdict"] in BAD]


def _proof_line(doc: Matrix) -> str:
    n = proof_totals(doc)
    total = n["proven"] + n["corroborating"] + n["unproven"]
    share = f"{100 * (n['proven'] + n['corroborating']) / total:.0f} %" if total else "—"
    return (f"expectations of {n['scenarios']} controlled scenario(s): {n['proven']} proven by a control, "
            f"{n['corroborating']} corroborating, {n['unproven']} unproven ({share} earn their place)")


def render_markdown(doc: Matrix) -> str:
    host = doc["host"]
    lines = ["# Container runtime conformance matrix", "",
             f"Generated {doc.get('generated', '')} on {host.get('os', '')}, kernel `{host.get('kernel')}`, "
             f"cgroup **{host.get('cgroup')}**.", "",
             "| runtime | version | path | config ociVersion | sandboxed | adaptations |", "|---|---|---|---|---|---|"]
    for name, rt in doc["runtimes"].items():
        lines.append(f"| {name} | {version_note(rt)} | `{rt.get('path')}` | {rt.get('spec_version', '')} | "
                     f"{_md_escape(sandbox_note(rt))} | {_md_escape(runtime_notes(rt))} |")
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
    lines += ["Totals: " + "; ".join(f"**{c}** {reading(n)}" for c, n in totals(doc).items()), "",
              f"Legend — {LEGEND}.", ""]
    for title, wanted in (("Failures and errors", BAD), ("Holds by another mechanism", (OTHER_MECHANISM,)),
                          ("Unobservable", (UNOBSERVABLE,))):
        cells = [r for r in doc["results"] if r["verdict"] in wanted]
        if cells:
            lines += [f"## {title}", ""]
            lines += [f"- **{r['scenario']}** on {column(r)} ({r['verdict']}): {_md_escape(r['evidence'])}"
                      for r in cells]
            lines.append("")
    controls = control_rows(doc)
    if controls:
        lines += ["## Negative controls: what breaks when a primitive is off", "",
                  "Each scenario runs on the reference runtime once per control, with its switches off; it must "
                  "fail, and the run names the expectations that broke. An expectation is *proven* when some "
                  "control broke it, *corroborating* when the scenario marks it as keeping the run honest "
                  "(with the reason), *unproven* otherwise.", "",
                  _proof_line(doc), "",
                  tabulate([[c[0], c[1], c[2], c[3], _md_escape(c[5]), _md_escape(c[6])] for c in controls],
                           headers=["switch off", "host", "scenario", "fails as it must", "broke", "evidence"],
                           tablefmt="github"), "",
                  tabulate([[s, len(e.proven), len(e.corroborating), len(e.unproven),
                             ", ".join(e.unproven) or "—"] for s, e in sorted(proofs(doc).items())],
                           headers=["scenario", "proven", "corroborating", "unproven", "unproven ids"],
                           tablefmt="github"), ""]
    stacked = stack_differences(doc)
    if stacked:
        lines += ["## Where the stack changes the verdict", "",
                  "An engine column (containerd/NAME) against its bare twin (NAME) on the same host: the engine "
                  "cell's evidence says what the stack did.", ""]
        lines += [f"- **{e['scenario']}** on {e.get('host', 'local')}: {b['runtime']} {b['verdict']}, "
                  f"{e['runtime']} {e['verdict']}: {_md_escape(e['evidence'])}" for b, e in stacked]
        lines.append("")
    skips = [r for r in doc["results"] if r["verdict"] == SKIP]
    if skips:
        lines += ["## Skipped (host or lane reasons)", ""]
        lines += [f"- **{r['scenario']}** on {column(r)}: {_md_escape(r['evidence'])}" for r in skips]
        lines.append("")
    return "\n".join(lines)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
