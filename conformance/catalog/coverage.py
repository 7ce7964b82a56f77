"""The coverage page, ``docs/coverage.md``: every check of the suites runtime maintainers run today,
mapped to the scenarios that cover it — generated from ``docs/coverage.yaml``.

    python -m conformance coverage            # (re)write docs/coverage.md
    python -m conformance coverage --check    # exit 1 when the page or the mapping is stale or wrong

The peers' items are listed by name in ``docs/peers/`` (the OCI runtime-tools
validation programs, crun's Python test functions, runc's bats files);
``docs/coverage.yaml`` says, for each, what it checks (in our words) and
either which scenarios cover it or why none does.  An item of a feature a
runc-compatible runtime does not have (crun-only annotations, CRIU, …) is
marked ``runc_compatible: false`` and left out of the percentages.  The
mapping is checked against the lists (every item once, nothing else) and
against the catalog (every scenario id it names exists).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conformance.model.errors import ScenarioError

from .loader import load_scenarios
from .page import REPO, SCENARIOS

DOCS = REPO / "docs"
MAPPING = DOCS / "coverage.yaml"
PAGE = DOCS / "coverage.md"
COMMAND = "python -m conformance coverage"

#: peer -> (its list in docs/peers/, where its items come from, how an item is named)
PEERS: dict[str, tuple[str, str, str]] = {
    "runtime-tools": ("runtime-tools-validation.txt", "https://github.com/opencontainers/runtime-tools/tree/master/validation",
                      "validation program"),
    "crun": ("crun-tests.txt", "https://github.com/containers/crun/tree/main/tests", "test function (tests/test_FILE.py)"),
    "runc-bats": ("runc-bats.txt", "https://github.com/opencontainers/runc/tree/main/tests/integration", "bats file"),
}


class CoverageError(Exception):
    """docs/coverage.yaml does not match the peers' lists or the catalog; the message says where."""


@dataclass(frozen=True)
class Item:
    """One peer check and what covers it."""

    peer: str
    key: str
    checks: str
    covered_by: tuple[str, ...]
    not_covered: str | None
    runc_compatible: bool
    note: str | None

    @property
    def covered(self) -> bool:
        return bool(self.covered_by)


def peer_items(peer: str, docs: Path = DOCS) -> list[str]:
    """The peer's list, one key per line; a line repeated is ``LINE #2``, ``#3`` … (crun's list cuts
    some camelCase names, so one name can stand for several functions)."""
    seen: dict[str, int] = {}
    keys = []
    for line in (docs / "peers" / PEERS[peer][0]).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        seen[line] = seen.get(line, 0) + 1
        keys.append(line if seen[line] == 1 else f"{line} #{seen[line]}")
    return keys


def load_mapping(path: Path = MAPPING, docs: Path = DOCS, scenario_ids: set[str] | None = None) -> list[Item]:
    """The mapping, checked: every listed item once and nothing else; known scenario ids; a reason
    for every item no scenario covers."""
    raw: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    problems: list[str] = []
    items: list[Item] = []
    for peer in PEERS:
        given: dict[str, Any] = raw.get(peer) or {}
        listed = peer_items(peer, docs)
        problems += [f"{peer}: {k!r} is in docs/peers/{PEERS[peer][0]} but not in {path.name}"
                     for k in listed if k not in given]
        problems += [f"{peer}: {k!r} is in {path.name} but not in docs/peers/{PEERS[peer][0]}"
                     for k in given if k not in listed]
        for key in listed:
            if key in given:
                item, why = _item(peer, key, given[key] or {}, scenario_ids)
                items.append(item)
                problems += why
    problems += [f"unknown peer {p!r} in {path.name} (known: {', '.join(PEERS)})" for p in raw if p not in PEERS]
    if problems:
        raise CoverageError(f"{path}: " + "; ".join(problems[:20]) + (f" (and {len(problems) - 20} more)"
                                                                     if len(problems) > 20 else ""))
    return items


def _item(peer: str, key: str, entry: dict[str, Any], scenario_ids: set[str] | None) -> tuple[Item, list[str]]:
    covered = tuple(entry.get("covered_by") or ())
    item = Item(peer, key, " ".join(str(entry.get("checks", "")).split()), covered,
                entry.get("not_covered"), entry.get("runc_compatible", True) is not False, entry.get("note"))
    why = []
    if not item.checks:
        why.append(f"{peer}: {key!r} says nothing of what it checks (checks:)")
    if not covered and not item.not_covered:
        why.append(f"{peer}: {key!r} is covered by no scenario and gives no reason (not_covered:)")
    if covered and not item.runc_compatible:
        why.append(f"{peer}: {key!r} is marked runc_compatible: false but names scenarios")
    if scenario_ids is not None:
        why += [f"{peer}: {key!r} names {s!r}, which is no scenario of the catalog" for s in covered
                if s not in scenario_ids]
    return item, why


def totals(items: list[Item]) -> dict[str, dict[str, int]]:
    """Per peer: items, those about runc-compatible behaviour, and how many of those are covered."""
    out: dict[str, dict[str, int]] = {}
    for peer in PEERS:
        mine = [i for i in items if i.peer == peer]
        relevant = [i for i in mine if i.runc_compatible]
        out[peer] = {"items": len(mine), "relevant": len(relevant), "covered": sum(1 for i in relevant if i.covered)}
    return out


def percent(count: dict[str, int]) -> float:
    return 100.0 * count["covered"] / count["relevant"] if count["relevant"] else 100.0


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def render(items: list[Item]) -> str:
    """The page's Markdown: totals first, then one table per peer."""
    count = totals(items)
    out = ["# Coverage of the peers' checks", "",
           f"<!-- Generated by `{COMMAND}` from docs/coverage.yaml: edit the mapping, then run it again. -->", "",
           "A runtime maintainer today runs the OCI's runtime-tools validation programs, crun's Python "
           "integration tests or runc's bats suite. Each of their checks is listed here with what it checks "
           "(read from its source, in our words) and the scenarios of [the catalog](catalog.md) that cover it, "
           "or why none does. Items about a feature a runc-compatible runtime does not have (crun-only "
           "annotations, CRIU, …) are listed but left out of the percentages.", "",
           "| peer | items | about runc-compatible behaviour | covered | % |", "|---|---|---|---|---|"]
    for peer, n in count.items():
        out.append(f"| [{peer}](#{peer}) | {n['items']} | {n['relevant']} | {n['covered']} | {percent(n):.0f} % |")
    for peer, (listing, source, what) in PEERS.items():
        mine = [i for i in items if i.peer == peer]
        out += ["", f"## {peer}", "",
                f"Each {what} of [{peer}]({source}) (names: [docs/peers/{listing}](peers/{listing})).", "",
                "| item | what it checks | covered by | note |", "|---|---|---|---|"]
        for i in mine:
            by = ", ".join(f"[`{s}`](catalog.md)" for s in i.covered_by) if i.covered else \
                f"**not covered**{'' if i.runc_compatible else ' (not runc-compatible)'}: {_cell(i.not_covered)}"
            out.append(f"| `{_cell(i.key)}` | {_cell(i.checks)} | {by} | {_cell(i.note)} |")
    return "\n".join(out) + "\n"


def scenario_ids(directory: Path = SCENARIOS) -> set[str]:
    ids: set[str] = set()
    for path in sorted(directory.rglob("*.y*ml")):
        ids |= {s.id for s in load_scenarios(path)}
    return ids


def _command(args: argparse.Namespace) -> int:
    page = Path(args.output)
    try:
        items = load_mapping(Path(args.mapping), scenario_ids=scenario_ids(Path(args.scenarios)))
    except (CoverageError, ScenarioError, OSError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    want = render(items)
    have = page.read_text() if page.exists() else None
    if args.check:
        if have != want:
            print(f"{page} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    if have != want:
        page.write_text(want)
    summary = ", ".join(f"{peer} {percent(n):.0f} %" for peer, n in totals(items).items())
    print(f"{page}: {summary}" + ("" if have != want else " (unchanged)"))
    return 0


def add_command(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``coverage`` verb of ``python -m conformance``."""
    cov = verbs.add_parser("coverage", help="write docs/coverage.md from docs/coverage.yaml (--check: exit 1 if stale)")
    cov.add_argument("--mapping", default=str(MAPPING), metavar="YAML", help="default: docs/coverage.yaml")
    cov.add_argument("--scenarios", default=str(SCENARIOS), metavar="DIR", help="default: scenarios/")
    cov.add_argument("-o", "--output", default=str(PAGE), metavar="MD", help="default: docs/coverage.md")
    cov.add_argument("--check", action="store_true", help="only check that the page is current")
    cov.set_defaults(run=_command)
