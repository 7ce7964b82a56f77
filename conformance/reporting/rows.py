"""The shapes of matrix.json, as types: what crosses from the items to the matrix, the baseline and HTML.

DESIGN.md fixes the contract (``schema``, ``host``, ``hosts``, ``runtimes``,
``results``); extra fields are welcome and tools ignore what they do not
know.  These TypedDicts are that contract for this code base: an item
records a ResultRow, the reporter builds a Matrix, the views and the
baseline read them, so a field renamed on one side fails mypy on the other.
"""
from __future__ import annotations

from typing import Any, Dict, List, TypedDict

from conformance.model.records import RuntimeEntry

__all__ = ["Cells", "Matrix", "ResultRow", "RuntimeEntry"]


class _ResultKeys(TypedDict):
    scenario: str          # the matrix row (a scenario id, or an invalid file's path)
    runtime: str           # the runtime's label (lane-qualified: containerd/runc, runc:rootless …)
    host: str              # the --hosts entry, "local" by default
    verdict: str           # model/verdicts.py; an unknown one is neither pass nor fail
    tags: List[str]
    duration_s: float
    evidence: str


class ResultRow(_ResultKeys, total=False):
    """One cell: a scenario on one runtime and host (or one negative-control run)."""

    title: str
    control: List[str]
    clause: str | None
    file: str                  # NAME.yaml:LINE
    oci_version: str | None    # the ociVersion its config.json was written at
    area: str                  # added by the document (model/areas.py)
    invalid: bool              # an invalid scenario file's error cell
    sandboxed: str             # the runtime runs containers in a sandbox: how its probe on that host saw it
    host_note: str             # the host's agent died during this cell and was restarted (and why)
    # negative controls only
    disabled: List[str]        # the switches turned off in ref
    broken: List[str]          # the expectation ids that broke
    expectations: List[str]    # the ids that need a control's proof
    corroborating: Dict[str, str]  # id -> why it need not break


class _MatrixKeys(TypedDict):
    schema: int
    host: Dict[str, Any]
    runtimes: Dict[str, RuntimeEntry]
    results: List[ResultRow]


class Matrix(_MatrixKeys, total=False):
    """matrix.json."""

    generated: str
    hosts: Dict[str, Dict[str, Any]]
    host_runtimes: Dict[str, Dict[str, RuntimeEntry]]
    controls: List[ResultRow]


#: {column: result} for one scenario
Cells = Dict[str, ResultRow]
