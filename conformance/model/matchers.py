"""Matchers: does an observed value meet what a scenario expects of it?

One vocabulary serves every expectation: ``equals``, ``contains``,
``not_contains``, ``matches``, ``not_matches``, ``at_least``, ``at_most``,
over a text (stdout, a /proc line, a cgroup file) or over a list (a testinfra
attribute such as a mount's options).

Each matcher is judged on its own (``text_results``): a scenario's
expectations are proven one by one (a negative control must break each of
them, see judge/verdict.py), so ``stdout: {contains: key, not_matches: …}``
is two expectations, ``stdout.contains[0]`` and ``stdout.not_matches``.
A result names its matcher, whether it held, and the miss in words.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple

from .placeholders import fill
from .scenario import TextExpectation


class MatcherResult(NamedTuple):
    """One matcher judged: its id suffix (``equals``, ``contains[1]`` …), held or not, the miss."""

    matcher: str
    ok: bool
    miss: str


def text_matchers(exp: TextExpectation) -> list[str]:
    """The id suffixes of ``exp``'s matchers, in the order they are judged."""
    names = ["equals"] if exp.equals is not None else []
    names += [f"contains[{i}]" for i in range(len(exp.contains))]
    names += [f"not_contains[{i}]" for i in range(len(exp.not_contains))]
    names += [n for n in ("matches", "not_matches", "at_least", "at_most") if getattr(exp, n) is not None]
    return names


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def text_results(exp: TextExpectation, text: str, variables: dict[str, str]) -> list[MatcherResult]:
    """Every matcher of ``exp`` judged against ``text`` (placeholders filled first)."""
    e = fill(exp.__dict__, variables)
    out = []
    if e["equals"] is not None:
        out.append(MatcherResult("equals", text.strip() == e["equals"].strip(), f"expected {e['equals'].strip()!r}"))
    out += [MatcherResult(f"contains[{i}]", s in text, f"expected to contain {s!r}") for i, s in enumerate(e["contains"])]
    out += [MatcherResult(f"not_contains[{i}]", s not in text, f"expected not to contain {s!r}")
            for i, s in enumerate(e["not_contains"])]
    if e["matches"] is not None:
        out.append(MatcherResult("matches", bool(re.search(e["matches"], text, re.M)),
                                 f"expected to match /{e['matches']}/"))
    if e["not_matches"] is not None:
        out.append(MatcherResult("not_matches", not re.search(e["not_matches"], text, re.M),
                                 f"expected not to match /{e['not_matches']}/"))
    value = _number(text)
    for name, sign, bound in (("at_least", ">=", e["at_least"]), ("at_most", "<=", e["at_most"])):
        if bound is not None:
            held = value is not None and (value >= bound if name == "at_least" else value <= bound)
            out.append(MatcherResult(name, held, "expected a number" if value is None else f"expected {sign} {bound:g}"))
    return out


def text_failures(exp: TextExpectation, text: str, variables: dict[str, str]) -> list[str]:
    """The ways ``text`` misses ``exp``; empty when it matches."""
    return [r.miss for r in text_results(exp, text, variables) if not r.ok]


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
