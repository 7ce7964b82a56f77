"""Validate a config.json against the official OCI runtime-spec JSON Schema.

The schema files come from Debian's golang-github-opencontainers-specs-dev
(installed by ci/setup.sh); ``OCI_RUNTIME_SPEC_SCHEMA`` may point elsewhere.
They reference each other by relative file name (``defs.json#/…``), so every
file of the directory is registered under its own URI.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SCHEMA_DIRS = (
    os.environ.get("OCI_RUNTIME_SPEC_SCHEMA", ""),
    "/usr/share/gocode/src/github.com/opencontainers/runtime-spec/schema",
)


def schema_dir() -> Path | None:
    for candidate in SCHEMA_DIRS:
        if candidate and (Path(candidate) / "config-schema.json").is_file():
            return Path(candidate)
    return None


@functools.lru_cache(maxsize=2)
def _validator(name: str) -> Any:

    root = schema_dir()
    if root is None:
        raise FileNotFoundError("the OCI runtime-spec schema is not installed "
                                "(apt-get install golang-github-opencontainers-specs-dev)")
    resources = []
    for path in root.glob("*.json"):
        contents = json.loads(path.read_text())
        resources.append((path.name, Resource.from_contents(contents, default_specification=DRAFT4)))
    registry = Registry().with_resources(resources)
    schema = json.loads((root / name).read_text())
    return jsonschema.Draft4Validator(schema, registry=registry)


def config_errors(config: dict[str, Any]) -> list[str]:
    """Every way ``config`` breaks the runtime-spec config schema (empty when valid)."""
    return [f"{'.'.join(map(str, e.absolute_path)) or 'config'}: {e.message}"
            for e in _validator("config-schema.json").iter_errors(config)]


def state_errors(state: dict[str, Any]) -> list[str]:
    """Every way a ``state`` answer breaks the runtime-spec state schema."""
    return [f"{'.'.join(map(str, e.absolute_path)) or 'state'}: {e.message}"
            for e in _validator("state-schema.json").iter_errors(state)]
