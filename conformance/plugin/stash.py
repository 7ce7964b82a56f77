"""What the plugin keeps in ``config.stash``: shared by its collectors, items and reporter."""
from __future__ import annotations

from pathlib import Path

import pytest

from conformance.hosts.connect import Targets

PACKAGE_DIR = Path(__file__).parent.parent  # the conformance package
RESULT_KEY = "conformance_result"  # the user property an item's result travels in (also from xdist workers)
targets_key = pytest.StashKey[Targets]()
runtimes_key = pytest.StashKey[list]()
hosts_key = pytest.StashKey[list]()


def scenarios_dir(config: pytest.Config) -> Path:
    given = config.getoption("scenarios")
    return Path(given).resolve() if given else PACKAGE_DIR.parent / "scenarios"
