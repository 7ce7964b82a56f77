"""Matchers: does an observed value meet what a scenario expects of it?

One vocabulary serves every expectation: ``equals``, ``contains``,
``not_contains``, ``matches``, ``not_matches``, ``at_least``, ``at_most``,
over a text (stdout, a /proc line, a cgroup file) or over a list (a testinfra
attribute such as a mount's options).  Each function returns the ways the
value misses, empty when it matches, so a failure carries its own evidence.
"""
from __future__ import annotations

import re
from typing import Any

from .placeholders import fill
from .scenario import TextExpectation


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def text_failures(exp: TextExpectation, text: str, variables: dict[str, str]) -> list[str]:
    """The ways ``text`` misses ``exp``; empty when it matches."""
    exp = fill(exp.__dict__, variables)
    misses = []
    if exp["equals"] is not None and text.strip() != exp["equals"].strip():
        misses.append(f"expected {exp['equals'].strip()!r}")
    misses += [f"expected to contain {s!r}" for s in exp["contains"] if s not in text]
    misses += [f"expected not to contain {s!r}" for s in exp["not_contains"] if s in text]
    if exp["matches"] is not None and not re.search(exp["matches"], text, re.M):
        misses.append(f"expected to match /{exp['matches']}/")
    if exp["not_matches"] is not None and re.search(exp["not_matches"], text, re.M):
        misses.append(f"expected not to match /{exp['not_matches']}/")
    if exp["at_least"] is not None or exp["at_most"] is not None:
        value = _number(text)
        if value is None:
            misses.append("expected a number")
        else:
            if exp["at_least"] is not None and value < exp["at_least"]:
                misses.append(f"expected >= {exp['at_least']:g}")
            if exp["at_most"] is not None and value > exp["at_most"]:
                misses.append(f"expected <= {exp['at_most']:g}")
    return misses


def _strings(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _same(want: Any, value: Any) -> bool:
    """Equality as a scenario means it: booleans strictly, numbers by value, the rest as text."""
    if isinstance(want, bool) or isinstance(value, bool):
        return want is value
    if isinstance(want, (int, float)) and isinstance(value, (int, float)):
        return want == value
    return str(value).strip() == str(want).strip()


def inside_failures(expected: Any, value: Any, attribute: str = "") -> list[str]:
    """The ways one testinfra attribute misses its expectation (a value, or matchers)."""
    matchers = expected if isinstance(expected, dict) else {"equals": expected}
    if attribute == "mode":  # octal text either side: '644' is '0644'
        matchers = {k: (f"{int(str(v), 8):04o}" if k == "equals" and re.fullmatch(r"[0-7]{1,4}", str(v)) else v)
                    for k, v in matchers.items()}
    if not isinstance(value, list):
        misses = []
        if "equals" in matchers and not _same(matchers["equals"], value):
            misses.append(f"expected {matchers['equals']!r}")
        rest = {k: (_strings(v) if k in ("contains", "not_contains") else v)
                for k, v in matchers.items() if k != "equals"}
        return misses + (text_failures(TextExpectation.from_yaml(rest), str(value), {}) if rest else [])
    items, misses = _strings(value), []
    if "equals" in matchers and sorted(items) != sorted(_strings(matchers["equals"])):
        misses.append(f"expected {sorted(_strings(matchers['equals']))!r} (in any order)")
    misses += [f"expected to include {w!r}" for w in _strings(matchers.get("contains", [])) if w not in items]
    misses += [f"expected not to include {w!r}" for w in _strings(matchers.get("not_contains", [])) if w in items]
    if "matches" in matchers and not any(re.search(matchers["matches"], i, re.M) for i in items):
        misses.append(f"expected an item matching /{matchers['matches']}/")
    if "not_matches" in matchers and any(re.search(matchers["not_matches"], i, re.M) for i in items):
        misses.append(f"expected no item matching /{matchers['not_matches']}/")
    if "at_least" in matchers and len(items) < matchers["at_least"]:
        misses.append(f"expected >= {matchers['at_least']:g} items")
    if "at_most" in matchers and len(items) > matchers["at_most"]:
        misses.append(f"expected <= {matchers['at_most']:g} items")
    return misses
