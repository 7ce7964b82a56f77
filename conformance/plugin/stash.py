"""What the plugin keeps in ``config.stash``: shared by its collectors, items and reporter."""
from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import pytest

from conformance.hosts.connect import Targets
from conformance.reporting.rows import ResultRow

PACKAGE_DIR = Path(__file__).parent.parent  # the conformance package
RESULT_KEY = "conformance_result"  # the user property an item's result travels in (also from xdist workers)
targets_key = pytest.StashKey[Targets]()
runtimes_key = pytest.StashKey[list[str]]()
hosts_key = pytest.StashKey[list[str]]()


def recorded_result(report: pytest.TestReport) -> ResultRow | None:
    """The cell an item recorded (items.py writes it as JSON in a user property), if any."""
    value = next((v for k, v in report.user_properties if k == RESULT_KEY), None)
    return None if value is None else cast(ResultRow, json.loads(str(value)))


def scenarios_dir(config: pytest.Config) -> Path:
    given = config.getoption("scenarios")
    return Path(given).resolve() if given else PACKAGE_DIR.parent / "scenarios"
