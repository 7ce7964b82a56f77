"""The compatibility matrix document: runtimes × scenarios × hosts, and how to read it as a grid.

The JSON shape is a contract (shared/DESIGN.md): ``schema``, ``host``,
``hosts``, ``runtimes`` and ``results`` (one per scenario × runtime × host,
with verdict and evidence).  Every other format is a view of this document
(text.py: Markdown and the terminal; html.py; files.py writes them), so a
matrix can be re-rendered, merged or compared from a saved JSON alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from conformance.model.areas import AREAS, OTHER_AREA, area
from conformance.model.verdicts import BAD, ERROR, FAIL, HOLDS, PASS, READING, SKIP, VERDICTS

from .rows import Cells, Matrix, ResultRow, RuntimeEntry

SCHEMA_VERSION = 1


def build_document(results: Iterable[ResultRow], host: dict[str, Any], runtimes: dict[str, RuntimeEntry],
                   hosts: dict[str, dict[str, Any]] | None = None,
                   host_runtimes: dict[str, dict[str, RuntimeEntry]] | None = None) -> Matrix:
    """The matrix document; results are sorted so two runs diff cleanly.

    Negative-control runs (ref with switches off, marked by ``disabled``) go
    to their own list: they answer "what breaks when X is off", not "does
    this runtime isolate".
    """
    rows = list(results)
    runtimes = _sandboxes(runtimes, rows, "local")
    return {
        "schema": SCHEMA_VERSION,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": host,
        "hosts": hosts if hosts is not None else {"local": host},
        "runtimes": runtimes,
        "host_runtimes": {spec: _sandboxes(rts, rows, spec) for spec, rts in host_runtimes.items()}
        if host_runtimes is not None else {"local": runtimes},
        "results": sorted((_with_area(r) for r in rows if not r.get("disabled")), key=_cell_key),
        "controls": sorted((r for r in rows if r.get("disabled")), key=_cell_key),
    }


def _sandboxes(runtimes: dict[str, RuntimeEntry], rows: list[ResultRow], host: str) -> dict[str, RuntimeEntry]:
    """Each runtime entry of ``host`` says whether its column ran in a sandbox, and how that was seen.

    The harness probes each runtime once per host (host/sandbox.py) and its
    cells carry the evidence when the probe found a sandbox; a column with
    cells judged on that host and no such evidence is not sandboxed.  An entry
    that already says (a merged or re-rendered matrix) keeps its word.
    """
    out: dict[str, RuntimeEntry] = {}
    for name, entry in runtimes.items():
        cells = [r for r in rows if r["runtime"] == name and r.get("host", "local") == host
                 and not r.get("disabled")]
        seen = next((r["sandboxed"] for r in cells if r.get("sandboxed")), None)
        entry = entry.copy()
        if seen is not None:
            entry["sandboxed"] = seen
        elif "sandboxed" not in entry and any(r["verdict"] not in (SKIP, ERROR) for r in cells):
            entry["sandboxed"] = False
        out[name] = entry
    return out


def _cell_key(r: ResultRow) -> tuple[str, str, str]:
    return (r["scenario"], r["runtime"], r["host"])


def _with_area(r: ResultRow) -> ResultRow:
    row = r.copy()
    row["area"] = area(r.get("tags", []))
    return row


def control_proven(result: ResultRow) -> bool:
    """A control run proves something when the scenario failed on at least one of its expectations."""
    return result["verdict"] == FAIL and bool(result.get("broken", ["(a matrix from before broken was recorded)"]))


def control_rows(doc: Matrix) -> list[list[str]]:
    """[switches off, host, scenario, proven?, verdict, what broke, evidence] per negative control run."""
    rows = []
    for r in sorted(doc.get("controls", []), key=lambda r: ("+".join(r["disabled"]), r["scenario"], r["host"])):
        proven = "yes" if control_proven(r) else "skipped" if r["verdict"] == SKIP else "NO"
        rows.append(["+".join(r["disabled"]), r["host"], r["scenario"], proven, r["verdict"],
                     ", ".join(r.get("broken", [])), r["evidence"]])
    return rows


@dataclass
class Proof:
    """What a scenario's control runs showed of its expectations (over every run on every host)."""

    expectations: list[str] = field(default_factory=list)   # the ids that need a control's proof
    corroborating: dict[str, str] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)            # what some failing control run broke
    runs: int = 0
    proving_runs: int = 0

    @property
    def proven(self) -> list[str]:
        return [e for e in self.expectations if e in self.broken]

    @property
    def unproven(self) -> list[str]:
        return [e for e in self.expectations if e not in self.broken]


def proofs(doc: Matrix) -> dict[str, Proof]:
    """Per scenario, over every control run on every host: which expectations a control broke
    (proven), which are marked corroborating, which nothing broke yet (unproven)."""
    out: dict[str, Proof] = {}
    for r in doc.get("controls", []):
        if "expectations" not in r:  # a matrix from before expectations were proven one by one
            continue
        entry = out.setdefault(r["scenario"], Proof())
        entry.expectations = list(dict.fromkeys(entry.expectations + r["expectations"]))
        entry.corroborating.update(r.get("corroborating") or {})
        entry.runs += 1
        if control_proven(r):
            entry.proving_runs += 1
            entry.broken |= set(r.get("broken", []))
    return out


def proof_totals(doc: Matrix) -> dict[str, int]:
    """The catalog's count: expectations proven, corroborating, unproven (over the scenarios controlled)."""
    found = proofs(doc).values()
    return {"scenarios": len(found), "proven": sum(len(e.proven) for e in found),
            "corroborating": sum(len(e.corroborating) for e in found),
            "unproven": sum(len(e.unproven) for e in found)}


# -- the grid ---------------------------------------------------------------------
def column(result: ResultRow) -> str:
    return result["runtime"] if result["host"] == "local" else f"{result['runtime']}@{result['host']}"


def columns(doc: Matrix) -> list[str]:
    seen: list[str] = []
    for name in doc["runtimes"]:
        seen.append(name)
    for r in doc["results"]:
        if column(r) not in seen:
            seen.append(column(r))
    return [c for c in seen if any(column(r) == c for r in doc["results"])]


def grid(doc: Matrix) -> tuple[list[str], dict[str, Cells]]:
    """(columns, {scenario: {column: result}})."""
    rows: dict[str, Cells] = {}
    for r in doc["results"]:
        rows.setdefault(r["scenario"], {})[column(r)] = r
    return columns(doc), rows


def grouped(doc: Matrix) -> tuple[list[str], list[tuple[str, list[tuple[str, Cells]]]]]:
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
    return len({r["verdict"] for r in cells.values()} - {SKIP}) > 1


def count(results: Iterable[ResultRow]) -> dict[str, int]:
    """Cells per verdict; a verdict this version does not know gets its own key (DESIGN: neither pass nor fail)."""
    counts = dict.fromkeys(VERDICTS, 0)
    for r in results:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return counts


def holds_ratio(counts: dict[str, int]) -> str:
    """``N/M hold``: cells where the property holds (by any mechanism) of those judged (skips aside)."""
    judged = sum(n for v, n in counts.items() if v != SKIP)
    return f"{sum(counts.get(v, 0) for v in HOLDS)}/{judged} hold"


def reading(counts: dict[str, int]) -> str:
    """A column's totals as a reader says them: holds · holds differently · unobservable · violated …"""
    return " · ".join(f"{n} {READING.get(v, v)}" for v, n in counts.items() if n or v in (PASS, FAIL))


def pass_ratio(counts: dict[str, int]) -> float | None:
    """Cells where the property holds among those that judged the runtime (holds, fail, error); None
    when none did.  A skip is a host reason, unobservable and an unknown verdict are neither pass nor
    fail, so none of them moves the ratio.
    """
    holds = sum(counts.get(v, 0) for v in HOLDS)
    judged = holds + sum(counts.get(v, 0) for v in BAD)
    return holds / judged if judged else None


def totals(doc: Matrix) -> dict[str, dict[str, int]]:
    cols, rows = grid(doc)
    return {c: count(cells[c] for cells in rows.values() if c in cells) for c in cols}


def twin(doc: Matrix, result: ResultRow) -> str | None:
    """The bare column an engine column drives through its engine (``containerd/runc`` -> ``runc``), or None
    for a bare column; its runtime entry says its lane."""
    entry = ((doc.get("host_runtimes") or {}).get(result.get("host", "local")) or doc["runtimes"]).get(
        result["runtime"]) or doc["runtimes"].get(result["runtime"]) or {}
    lane = entry.get("lane")
    prefix = f"{lane}/"
    return result["runtime"][len(prefix):] if entry.get("engine") and result["runtime"].startswith(prefix) else None


def stack_differences(doc: Matrix) -> list[tuple[ResultRow, ResultRow]]:
    """(bare cell, engine cell) wherever an engine column's verdict differs from its bare twin's on the same
    host and scenario: what the stack changed.  The engine cell's evidence says why; a skip on the engine
    lane (a step it cannot express) is listed too, so no cell goes unaccounted."""
    by_key = {(r["scenario"], r["runtime"], r.get("host", "local")): r for r in doc["results"]}
    out = []
    for r in doc["results"]:
        bare = twin(doc, r)
        other = by_key.get((r["scenario"], bare, r.get("host", "local"))) if bare else None
        if other is not None and other["verdict"] != r["verdict"]:
            out.append((other, r))
    return out


def runtime_note_list(rt: RuntimeEntry) -> list[str]:
    """What the header says of how a column was driven: its engine, every adaptation, who unpacked images."""
    notes = [f"driven by {rt['engine']} through {rt.get('shim', 'its shim')}"] if rt.get("engine") else []
    notes += rt.get("adaptations") or []
    if rt.get("snapshotter"):
        notes.append(f"image layers unpacked and mounted by {rt['snapshotter']}")
    return notes


def runtime_notes(rt: RuntimeEntry) -> str:
    return "; ".join(runtime_note_list(rt)) or rt.get("error") or "—"


def version_note(rt: RuntimeEntry) -> str:
    """A column's version, and its engine's when an engine drove it: ``1.1.5 (containerd 1.6.20)``."""
    return f"{rt.get('version')}" + (f" ({rt['engine']})" if rt.get("engine") else "")


def sandbox_note(rt: RuntimeEntry) -> str:
    """The header's word on a column: sandboxed, and how the harness saw it; or not; or not probed."""
    seen = rt.get("sandboxed")
    if isinstance(seen, str) and seen:
        return f"yes: {seen} (probe: after start, /proc/<state pid>/exe against the entrypoint, by device and inode)"
    return "no" if seen is False else "—"


def merge(docs: list[Matrix]) -> Matrix:
    """One matrix from several (one per CI job, say): results and runtimes side by side.

    The host profile is the first document's; a runtime or cell that two
    documents both have is taken from the later one.
    """
    results: dict[tuple[str, str, str], ResultRow] = {}
    controls: dict[tuple[str, tuple[str, ...], str], ResultRow] = {}
    runtimes: dict[str, RuntimeEntry] = {}
    hosts: dict[str, dict[str, Any]] = {}
    host_runtimes: dict[str, dict[str, RuntimeEntry]] = {}
    for doc in docs:
        runtimes.update(doc.get("runtimes", {}))
        hosts.update(doc.get("hosts") or {"local": doc["host"]})
        for spec, rts in (doc.get("host_runtimes") or {"local": doc.get("runtimes", {})}).items():
            host_runtimes.setdefault(spec, {}).update(rts)
        for r in doc["results"]:
            results[(r["scenario"], r["runtime"], r.get("host", "local"))] = r
        for r in doc.get("controls", []):
            controls[(r["scenario"], tuple(r.get("disabled", ())), r.get("host", "local"))] = r
    merged = build_document([*results.values(), *controls.values()], docs[0]["host"], runtimes,
                                   hosts=hosts, host_runtimes=host_runtimes)
    return merged
