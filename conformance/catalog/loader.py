"""Read a scenario file and validate it against the JSON Schema, with line numbers.

PyYAML's ``safe_load`` forgets where values came from, so we compose the node
tree ourselves and keep a map from each value's path (``("expect", "stdout")``)
to its line.  A schema error is then reported at the line of the offending
value, or of the unknown key, which is what a person editing the file needs.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import yaml

from conformance.model.cache_dir import cache_root
from conformance.model.errors import ScenarioError
from conformance.model.expectations import expectation_refs, unknown_marks
from conformance.model.scenario import LinePath, Scenario, from_document

from .schema import SCHEMA_PATH, scenario_schema

__all__ = ["SCHEMA_PATH", "load_file", "load_scenarios", "parse_documents", "readable_tags", "scenario_schema",
           "validate"]


def _construct(node: yaml.Node, path: LinePath, lines: dict[LinePath, int], file: str) -> Any:
    """Turn a composed node into plain Python, recording each value's 1-based line."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ScenarioError(file, key_node.start_mark.line + 1, "a key must be a plain word")
            key = _scalar(key_node)
            if key in out:
                raise ScenarioError(file, key_node.start_mark.line + 1, f"duplicate key {key!r}")
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, path + (key,), lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), lines, file) for i, item in enumerate(node.value)]
    return _scalar(node)


#: PyYAML's C parser when it was built with libyaml (several times faster than the pure-Python one,
#: with the same nodes and marks); the pure-Python one otherwise
_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: one constructor for every scalar (making a loader per scalar cost more than parsing the file)
_SCALARS = yaml.constructor.SafeConstructor()


def _scalar(node: yaml.Node) -> Any:
    try:
        return _SCALARS.construct_object(node, deep=True)
    finally:
        _SCALARS.constructed_objects.clear()  # its memo would keep every node of every file


def parse_documents(text: str, file: str) -> Iterator[tuple[dict[str, Any], dict[LinePath, int]]]:
    """Yield (document, line map) for every YAML document in ``text``."""
    try:
        try:
            nodes = list(yaml.compose_all(text, Loader=_COMPOSER))
        except yaml.MarkedYAMLError:  # said again by the pure-Python parser, whose marks point closer
            nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ScenarioError(file, line, f"not valid YAML: {exc.problem or exc}") from None
    for node in nodes:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            continue  # an empty document (a trailing ---)
        lines: dict[LinePath, int] = {}
        doc = _construct(node, (), lines, file)
        if not isinstance(doc, dict):
            raise ScenarioError(file, node.start_mark.line + 1,
                                "a scenario must be a mapping (id, title, tags, run, expect, …)")
        yield doc, lines


def _line_for(path: LinePath, lines: dict[LinePath, int]) -> int | None:
    """The line of ``path``, or of its nearest ancestor that has one."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _describe(error: Any, lines: dict[LinePath, int]) -> tuple[int | None, str]:
    """A one-line, human message and line for one jsonschema error."""
    path = tuple(error.absolute_path)
    where = ".".join(str(p) for p in path) or "top level"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = [k for k in error.instance if k not in error.schema.get("properties", {})]
        key = unknown[0] if unknown else "?"
        return (_line_for(path + (key,), lines),
                f"unknown key {key!r} in {where} (allowed: {', '.join(allowed)})")
    if error.validator == "required":
        return _line_for(path, lines), f"{where}: {error.message}"
    if error.validator in ("oneOf", "anyOf") and error.context:
        return _describe(_closest_branch_error(error), lines)
    return _line_for(path, lines), f"{where}: {error.message}"


def _closest_branch_error(error: Any) -> Any:
    """Of a oneOf's alternatives, the error from the one the author meant.

    The meant branch is the one whose own required keys are present (no
    ``required`` error); within it, the deepest error is the most specific.
    """
    branches: dict[Any, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    meant = [errs for errs in branches.values() if not any(e.validator == "required" for e in errs)]
    pool = meant[0] if meant else min(branches.values(), key=len)
    return max(pool, key=lambda e: len(list(e.absolute_path)))


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    """The schema's validator, made once (making it compiles the schema's references)."""
    import jsonschema  # only when a document is not known valid: its import is a tenth of pytest's start

    return jsonschema.Draft202012Validator(scenario_schema())


def _known_valid_dir() -> Path:
    return cache_root() / "valid-scenarios"


@functools.lru_cache(maxsize=1)
def _schema_digest() -> bytes:
    return hashlib.sha256(SCHEMA_PATH.read_bytes()).digest()


def _known_valid(doc: dict[str, Any]) -> Path:
    """Where a mark says this document passed this schema: named by the hash of both."""
    text = json.dumps(doc, sort_keys=True, default=repr).encode()
    return _known_valid_dir() / hashlib.sha256(_schema_digest() + text).hexdigest()


def validate(doc: dict[str, Any], lines: dict[LinePath, int], file: str) -> None:
    """Validate one scenario document; raise ScenarioError at the first error's line.

    A document that passed the same schema before (a mark in the user's cache,
    named by the hash of the schema and the document) is not validated again.
    """
    mark = _known_valid(doc)
    if mark.exists():
        return
    validator = _validator()
    errors = sorted(validator.iter_errors(doc),
                    key=lambda e: (_line_for(tuple(e.absolute_path), lines) or 0, str(e.message)))
    if errors:
        line, message = _describe(errors[0], lines)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ScenarioError(file, line, message + more)
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    except OSError:  # a read-only cache: validated every time, as before
        pass


def load_file(path: Path) -> list[tuple[dict[str, Any], dict[LinePath, int]]]:
    """Parse and validate every scenario document in one file."""
    file = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(file, None, f"cannot read: {exc.strerror}") from None
    docs = list(parse_documents(text, file))
    if not docs:
        raise ScenarioError(file, None, "the file holds no scenario")
    for doc, lines in docs:
        validate(doc, lines, file)
    return docs


def load_scenarios(path: Path) -> list[Scenario]:
    """All scenarios of one file; raises ScenarioError naming file and line."""
    scenarios = []
    for doc, lines in load_file(path):
        scenario = from_document(doc, lines, path)
        for mark in unknown_marks(scenario):
            known = ", ".join(r.id for r in expectation_refs(scenario))
            raise ScenarioError(str(path), _line_for(("expect", "corroborating", mark), lines),
                                f"expect.corroborating: {mark!r} names no expectation of this scenario "
                                f"(its expectations: {known})")
        scenarios.append(scenario)
    return scenarios


def readable_tags(path: Path) -> tuple[str, ...]:
    """The known tags a file names, read leniently: for a file that does not load.

    An invalid file still becomes error items; marking them with the tags the
    file can be read to have keeps the error in view of ``-m TAG`` runs.  A file
    that is not even YAML has none.
    """
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return ()
    known = set(scenario_schema()["properties"]["tags"]["items"]["enum"])
    named = [tag for doc in docs if isinstance(doc, dict) and isinstance(doc.get("tags"), list)
             for tag in doc["tags"] if isinstance(tag, str) and tag in known]
    return tuple(dict.fromkeys(named))
