"""matrix.html: one self-contained page a person can read.

Host profile on top; then an overview, areas × columns as a heat map of
passes, each cell a link to its area; then the detail: one row per scenario
and one column per runtime, each cell coloured by verdict; the evidence sits
in the cell's tooltip and opens in place on click (<details>), so a failure
is one hover away.  Rows whose verdicts differ between runtimes are
highlighted.  No external assets.
"""
from __future__ import annotations

import re
from html import escape

from conformance.model.verdicts import BAD, HOLDS, VERDICTS

from .document import (
    control_rows,
    count,
    differs,
    grouped,
    holds_ratio,
    pass_ratio,
    proof_totals,
    proofs,
    reading,
    runtime_note_list,
    runtime_notes,
    sandbox_note,
    stack_differences,
    totals,
    version_note,
)
from .rows import Cells, Matrix, ResultRow
from .text import LEGEND

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}
h1{font-size:1.4rem} table{border-collapse:collapse} th,td{border:1px solid #ccc;padding:.25rem .5rem;vertical-align:top}
th{background:#f4f4f4;text-align:left} td.v{min-width:6rem}
.pass{background:#d9f2d9} .fail{background:#f8d0d0} .skip{background:#eee;color:#666} .error{background:#fde7b0}
.other-mechanism{background:#e3f0d0;background-image:repeating-linear-gradient(45deg,transparent 0 6px,#cfe3b4 6px 8px)}
.unobservable{background:#e6e6f5;color:#444}
tr.differs>td:first-child{border-left:4px solid #c0392b} .ne{color:#c0392b}
tbody.area>tr.area>th{background:#e8eef7}
details>summary{cursor:pointer;list-style:none;font-weight:600} details>div{font:12px/1.3 monospace;white-space:pre-wrap;max-width:40rem;margin-top:.3rem}
.tags{color:#666;font-size:12px} .host td{border:none;padding:.1rem .6rem .1rem 0}
.filters{margin:.8rem 0} .filters label{margin-right:.8rem}
table.overview td.heat{text-align:center;min-width:5rem;padding:0} table.overview td.heat a{display:block;padding:.3rem .5rem;color:inherit;text-decoration:none}
table.overview td.heat a:hover{outline:2px solid #222} td.heat small{display:block;font-size:11px}
.legend span{display:inline-block;padding:.1rem .5rem;font-size:12px} tbody.area:target>tr.area>th{background:#ffe08a}
"""

JS = """
function applyFilters(){
  const tag=document.getElementById('tag').value, verdict=document.getElementById('verdict').value;
  document.querySelectorAll('tbody tr.row').forEach(tr=>{
    const tagOk=!tag||tr.dataset.tags.split(' ').includes(tag);
    const vOk=!verdict||tr.dataset.verdicts.split(' ').includes(verdict)||(verdict==='differs'&&tr.classList.contains('differs'));
    tr.style.display=(tagOk&&vOk)?'':'none';});
  document.querySelectorAll('tbody.area').forEach(tb=>{
    const shown=[...tb.querySelectorAll('tr.row')].some(tr=>tr.style.display!=='none');
    tb.querySelector('tr.area').style.display=shown?'':'none';});
}
"""


def _cell(result: ResultRow | None) -> str:
    if result is None:
        return '<td class="v">—</td>'
    v = result["verdict"]
    evidence = escape(result.get("evidence") or "")
    return (f'<td class="v {v}" title="{evidence}"><details><summary>{v}</summary>'
            f'<div>{evidence}\n({result.get("duration_s", 0):.3f}s)</div></details></td>')


def _row(scenario: str, cells: Cells, cols: list[str]) -> str:
    first = next(iter(cells.values()))
    verdicts = {cells[c]["verdict"] for c in cols if c in cells}
    tags = first.get("tags", [])
    control = f" · control: {escape(', '.join(first['control']))}" if first.get("control") else ""
    mark = ' <span class="ne" title="verdicts differ between runtimes">≠</span>' if differs(cells) else ""
    return (f"<tr class='row{' differs' if differs(cells) else ''}' data-tags='{escape(' '.join(tags))}' "
            f"data-verdicts='{escape(' '.join(sorted(verdicts)))}'><td><b>{escape(scenario)}</b>{mark}<br>"
            f"<span class='tags'>{escape(first.get('title', ''))}<br>{escape(', '.join(tags))}{control}</span></td>"
            + "".join(_cell(cells.get(c)) for c in cols) + "</tr>")


def render_html(doc: Matrix) -> str:
    cols, areas = grouped(doc)
    host = doc["host"]
    all_tags = sorted({t for r in doc["results"] for t in r.get("tags", [])})
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>Runtime conformance matrix</title>",
           f"<style>{CSS}</style><script>{JS}</script></head><body>",
           "<h1>Container runtime conformance matrix</h1>", "<table class='host'>"]
    for key in ("os", "kernel", "arch", "cgroup", "cpus", "userns", "timens"):
        out.append(f"<tr><td>{escape(key)}</td><td><b>{escape(str(host.get(key, '')))}</b></td></tr>")
    out.append(f"<tr><td>generated</td><td>{escape(doc.get('generated', ''))}</td></tr></table>")
    out.append("<h2>Runtimes</h2><table><tr><th>runtime</th><th>version</th><th>path</th>"
               "<th>config ociVersion</th><th>sandboxed</th><th>adaptations</th></tr>")
    for name, rt in doc["runtimes"].items():
        listed = runtime_note_list(rt)
        notes = "<br>".join(escape(a) for a in listed) if listed else escape(runtime_notes(rt))
        out.append(f"<tr><td>{escape(name)}</td><td>{escape(version_note(rt))}</td>"
                   f"<td><code>{escape(str(rt.get('path')))}</code></td><td>{escape(str(rt.get('spec_version', '')))}</td>"
                   f"<td>{escape(sandbox_note(rt))}</td><td>{notes}</td></tr>")
    out.append("</table>")
    out += _other_hosts(doc)
    out += _overview(cols, areas)
    out.append("<h2>Detail</h2>")
    tag_options = "".join(f"<option>{escape(t)}</option>" for t in all_tags)
    out.append("<div class='filters'><label>tag <select id='tag' onchange='applyFilters()'><option value=''>all</option>"
               f"{tag_options}</select></label><label>verdict <select id='verdict' onchange='applyFilters()'>"
               "<option value=''>all</option>" + "".join(f"<option>{v}</option>" for v in VERDICTS)
               + "<option value='differs'>differs between runtimes</option></select></label></div>")
    out.append("<table><thead><tr><th>scenario</th>" + "".join(f"<th>{escape(c)}</th>" for c in cols)
               + "</tr></thead>")
    for area, scenarios in areas:
        counts = [count(cells[c] for _, cells in scenarios if c in cells) for c in cols]
        out.append(f"<tbody class='area' id='{area_anchor(area)}'><tr class='area'><th>{escape(area)}</th>"
                   + "".join(f"<th>{holds_ratio(n)}</th>" for n in counts) + "</tr>")
        for scenario, cells in scenarios:
            out.append(_row(scenario, cells, cols))
        out.append("</tbody>")
    tot = totals(doc)
    out.append("<tfoot><tr><th>total</th>" + "".join(f"<th>{escape(reading(tot[c]))}</th>" for c in cols)
               + "</tr></tfoot></table>")
    out.append(f"<p class='tags'>{escape(LEGEND)}.</p>")
    out += _stack(doc)
    out += _controls(doc)
    out.append("</body></html>")
    return "\n".join(out)


def _stack(doc: Matrix) -> list[str]:
    """Engine columns against their bare twins: the cells whose verdict the stack changed, with its evidence."""
    stacked = stack_differences(doc)
    if not stacked:
        return []
    out = ["<h2>Where the stack changes the verdict</h2><table><tr><th>scenario</th><th>host</th><th>bare</th>"
           "<th>through the engine</th><th>evidence</th></tr>"]
    for bare, engine in stacked:
        out.append(f"<tr><td>{escape(engine['scenario'])}</td><td>{escape(engine.get('host', 'local'))}</td>"
                   f"<td>{escape(bare['runtime'])}: {escape(bare['verdict'])}</td>"
                   f"<td>{escape(engine['runtime'])}: {escape(engine['verdict'])}</td>"
                   f"<td>{escape(engine['evidence'])}</td></tr>")
    return out + ["</table>"]


def area_anchor(area: str) -> str:
    """The id of an area's section in the detail table (``rootfs/overlay`` → ``area-rootfs-overlay``)."""
    return "area-" + re.sub(r"[^a-z0-9]+", "-", area.lower()).strip("-")


#: The heat map's one hue (a blue): lightness alone carries the ratio, so the scale reads the same
#: to colour-blind eyes and in greyscale, and the number is always written in the cell.
HEAT_HUE, HEAT_LIGHTEST, HEAT_DARKEST = 212, 96, 32


def heat_style(ratio: float | None) -> str:
    """The cell's inline style: the darker, the more of the judged cells pass; grey when none was judged."""
    if ratio is None:
        return "background:#f4f4f4;color:#666"
    # squared: most cells of a conformance suite sit near full passing, so the top of the scale
    # gets the most contrast (24/27 must not look like 27/27)
    lightness = round(HEAT_LIGHTEST - (HEAT_LIGHTEST - HEAT_DARKEST) * ratio ** 2)
    text = "#fff" if lightness < 50 else "#000"  # either way a contrast of at least 4.5:1 (WCAG AA)
    return f"background:hsl({HEAT_HUE},65%,{lightness}%);color:{text}"


def _heat_cell(area: str, column: str, counts: dict[str, int]) -> str:
    ratio = pass_ratio(counts)
    holds = sum(counts.get(v, 0) for v in HOLDS)
    judged = holds + sum(counts.get(v, 0) for v in BAD)
    unjudged = [f"{n} {verdict}" for verdict, n in counts.items() if verdict not in (*HOLDS, *BAD) and n]
    shown = f"{holds}/{judged}" if judged else "—"
    differently = counts.get(HOLDS[1], 0)
    failing = [f"{counts[verdict]} {verdict}" for verdict in BAD if counts.get(verdict)]
    title = (f"{column} · {area}: "
             + (f"the property holds in {holds} of {judged} judged cells" if judged else "no cell judged")
             + (f" ({differently} by another mechanism)" if differently else "")
             + (f" ({', '.join(failing)})" if failing else "")
             + (f"; not judged: {', '.join(unjudged)}" if unjudged else ""))
    extra = f"<small>+{escape(', '.join(unjudged))}</small>" if unjudged else ""
    return (f"<td class='heat' style='{heat_style(ratio)}' title='{escape(title)}' "
            f"data-ratio='{'' if ratio is None else f'{ratio:.3f}'}'>"
            f"<a href='#{area_anchor(area)}'>{shown}{extra}</a></td>")


def _overview(cols: list[str], areas: list[tuple[str, list[tuple[str, Cells]]]]) -> list[str]:
    """Areas × columns, each cell the passes among the judged cells, as a heat map; a link to the area."""
    out = ["<h2>Overview</h2>",
           "<p>Cells where the property holds (by any mechanism) among those each runtime was judged on "
           "(skips are host reasons, unobservable cells could not be judged: shown, not counted). "
           "Click a cell for the area's scenarios.</p>",
           "<table class='overview'><thead><tr><th>area</th>" + "".join(f"<th>{escape(c)}</th>" for c in cols)
           + "</tr></thead><tbody>"]
    for area, scenarios in areas:
        out.append(f"<tr><th><a href='#{area_anchor(area)}'>{escape(area)}</a></th>" + "".join(
            _heat_cell(area, c, count(cells[c] for _, cells in scenarios if c in cells)) for c in cols) + "</tr>")
    out.append("</tbody></table>")
    swatches = "".join(f"<span style='{heat_style(r / 4)}'>{r * 25}%</span>" for r in range(5))
    out.append(f"<p class='legend'>passing: {swatches} <span style='{heat_style(None)}'>nothing judged</span></p>")
    return out


def _other_hosts(doc: Matrix) -> list[str]:
    """One row per --hosts entry besides local: its kernel, cgroup layout and runtimes as seen there."""
    others = {spec: prof for spec, prof in (doc.get("hosts") or {}).items() if spec != "local"}
    if not others:
        return []
    out = ["<h2>Other hosts</h2><table><tr><th>host</th><th>kernel</th><th>cgroup</th><th>runtimes there</th>"
           "<th>notes</th></tr>"]
    for spec, prof in others.items():
        rts = (doc.get("host_runtimes") or {}).get(spec) or {}
        runtimes = "<br>".join(escape(f"{n} {rt.get('version')}" + (": " + "; ".join(rt["adaptations"])
                                                                    if rt.get("adaptations") else ""))
                               for n, rt in rts.items())
        notes = "; ".join(f"{k} {prof[k]}" for k in ("guest_boot_s", "guest_accel") if k in prof)
        out.append(f"<tr><td><code>{escape(spec)}</code></td><td>{escape(str(prof.get('kernel', prof.get('error', ''))))}"
                   f"</td><td>{escape(str(prof.get('cgroup', '')))}</td><td>{runtimes}</td><td>{escape(notes)}</td></tr>")
    out.append("</table>")
    return out


def _controls(doc: Matrix) -> list[str]:
    """The negative-control view: with X switched off in ref, these scenarios fail, and these expectations broke."""
    rows = control_rows(doc)
    if not rows:
        return []
    out = ["<h2>Negative controls: what breaks when a primitive is off</h2>",
           "<p>Each scenario is run on the reference runtime once per control, with its switches off; it must "
           "fail, and the run names the expectations that broke. A control that still passes means the scenario "
           "cannot see its property go missing.</p>",
           f"<p><b>{escape(_proof_summary(doc))}</b></p>",
           "<table><thead><tr><th>switch off</th><th>host</th><th>scenario</th><th>fails as it must</th>"
           "<th>broke</th></tr></thead><tbody>"]
    for switch, host, scenario, proven, verdict, broke, evidence in rows:
        css = {"yes": "pass", "skipped": "skip"}.get(proven, "fail")
        out.append(f"<tr><td><code>{escape(switch)}</code></td><td>{escape(host)}</td><td>{escape(scenario)}</td>"
                   f"<td class='v {css}' title='{escape(evidence)}'><details><summary>{escape(proven)} ({escape(verdict)})"
                   f"</summary><div>{escape(evidence)}</div></details></td><td><code>{escape(broke)}</code></td></tr>")
    out.append("</tbody></table>")
    out += ["<h3>Expectations per scenario</h3><table><thead><tr><th>scenario</th><th>proven</th>"
            "<th>corroborating</th><th>unproven</th></tr></thead><tbody>"]
    for scenario, entry in sorted(proofs(doc).items()):
        css = "fail" if entry.unproven else "pass"
        marks = "<br>".join(f"<code>{escape(i)}</code>: {escape(why)}" for i, why in entry.corroborating.items())
        out.append(f"<tr><td>{escape(scenario)}</td><td title='{escape(', '.join(entry.proven))}'>"
                   f"{len(entry.proven)}</td><td>{len(entry.corroborating)}<br><span class='tags'>{marks}</span>"
                   f"</td><td class='v {css}'>{len(entry.unproven)} {escape(', '.join(entry.unproven))}</td></tr>")
    out.append("</tbody></table>")
    return out


def _proof_summary(doc: Matrix) -> str:
    n = proof_totals(doc)
    return (f"Expectations of {n['scenarios']} controlled scenario(s): {n['proven']} proven by a control, "
            f"{n['corroborating']} corroborating, {n['unproven']} unproven")
