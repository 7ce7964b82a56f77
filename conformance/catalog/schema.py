"""The scenario JSON Schema shipped with the package: its path and its content.

Apart from the loader so that what needs only the schema (the plugin's tag
markers, the cache's code digest) does not import PyYAML with it.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).parent.parent / "schema" / "scenario.schema.json"


@functools.lru_cache(maxsize=1)
def scenario_schema() -> dict[str, Any]:
    """The JSON Schema shipped with the package (also used by editors)."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema
