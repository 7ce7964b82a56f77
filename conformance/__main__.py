"""``python -m conformance``: work with saved matrices, without running anything.

    python -m conformance diff OLD.json NEW.json     # exit 1 on regressions (pass -> fail/error)
    python -m conformance merge A.json B.json … -o DIR   # one matrix from several runs (e.g. CI jobs)
    python -m conformance render matrix.json -o DIR  # rewrite matrix.md and matrix.html from the JSON
    python -m conformance catalog [--check]          # write docs/catalog.md from scenarios/ (exit 1: stale)
    python -m conformance coverage [--check]         # write docs/coverage.md from docs/coverage.yaml

Exit status: 0 fine, 1 regressions (diff), 2 a file could not be used.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from conformance.catalog import coverage, page
from conformance.reporting.baseline import BaselineError, compare, load
from conformance.reporting.document import merge
from conformance.reporting.files import write_all


def _diff(args: argparse.Namespace) -> int:
    old, new = load(args.old), load(args.new)
    comparison = compare(old, new)
    print(comparison.render(args.old, args.new))
    return 0 if comparison.ok else 1


def _merge(args: argparse.Namespace) -> int:
    doc = merge([load(p) for p in args.matrices])
    for path in write_all(doc, Path(args.output)):
        print(path)
    return 0


def _render(args: argparse.Namespace) -> int:
    for path in write_all(load(args.matrix), Path(args.output)):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    diff = verbs.add_parser("diff", help="compare two matrix.json files; exit 1 on regressions")
    diff.add_argument("old", help="the baseline matrix.json")
    diff.add_argument("new", help="the matrix.json to judge")
    diff.set_defaults(run=_diff)
    mrg = verbs.add_parser("merge", help="merge matrix.json files (e.g. one per CI job) into one matrix")
    mrg.add_argument("matrices", nargs="+", metavar="MATRIX.json")
    mrg.add_argument("-o", "--output", required=True, metavar="DIR", help="where matrix.json/.md/.html go")
    mrg.set_defaults(run=_merge)
    ren = verbs.add_parser("render", help="write matrix.md and matrix.html (and the JSON) from a matrix.json")
    ren.add_argument("matrix", metavar="MATRIX.json")
    ren.add_argument("-o", "--output", required=True, metavar="DIR")
    ren.set_defaults(run=_render)
    page.add_command(verbs)
    coverage.add_command(verbs)
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
        return status
    except BaselineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
