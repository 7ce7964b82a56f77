"""The verdicts a cell can carry, and what each means to a reader.

``pass``, ``fail``, ``skip`` and ``error`` as in any test report, plus two
that judging the property rather than runc's mechanism needs:
``other-mechanism`` (the property holds, provided another way than a
namespaces-and-cgroups runtime does it) and ``unobservable`` (the runtime
hides the place the check reads: neither a pass nor a fail).  Tools that
read matrix.json must treat a verdict they do not know as neither.
"""
from __future__ import annotations

PASS, FAIL, SKIP, ERROR = "pass", "fail", "skip", "error"
OTHER_MECHANISM, UNOBSERVABLE = "other-mechanism", "unobservable"
#: every verdict, in the order a reader meets them: holds, holds differently, unobservable, violated …
VERDICTS = (PASS, OTHER_MECHANISM, UNOBSERVABLE, FAIL, ERROR, SKIP)
#: the property holds
HOLDS = (PASS, OTHER_MECHANISM)
#: a cell that says something bad about the runtime (what the regression gate watches)
BAD = (FAIL, ERROR)
#: how the totals name each verdict
READING = {PASS: "holds", OTHER_MECHANISM: "holds differently", UNOBSERVABLE: "unobservable",
           FAIL: "violated", ERROR: "error", SKIP: "skipped"}
