"""docs/coverage.md: the peers' checks mapped to scenarios, kept current and checked against both ends."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.catalog import coverage

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ids() -> set[str]:
    return coverage.scenario_ids()


def test_the_committed_page_is_what_the_mapping_gives(ids):
    items = coverage.load_mapping(scenario_ids=ids)
    assert coverage.PAGE.read_text() == coverage.render(items), "run `python -m conformance coverage`"


def test_every_peer_item_is_mapped_once_with_what_it_checks(ids):
    items = coverage.load_mapping(scenario_ids=ids)
    for peer in coverage.PEERS:
        keys = [i.key for i in items if i.peer == peer]
        assert keys == coverage.peer_items(peer) and len(set(keys)) == len(keys)
    assert all(i.checks and (i.covered or i.not_covered) for i in items)


def _copy(tmp_path: Path) -> tuple[Path, Path]:
    docs = tmp_path / "docs"
    shutil.copytree(REPO / "docs" / "peers", docs / "peers")
    mapping = docs / "coverage.yaml"
    mapping.write_text(coverage.MAPPING.read_text())
    return docs, mapping


@pytest.mark.parametrize("change, message", [
    (lambda t: t.replace("  create:\n", "  create-typo:\n", 1), "'create' is in docs/peers"),
    (lambda t: t.replace("covered_by:\n", "covered_by:\n    - no-such-scenario\n", 1), "no scenario of the catalog"),
    (lambda t: re.sub(r"\n    not_covered: .*(\n      .*)*", "", t, count=1), "gives no reason"),
])
def test_a_wrong_mapping_names_what_is_wrong(tmp_path, change, message, ids):
    docs, mapping = _copy(tmp_path)
    mapping.write_text(change(mapping.read_text()))
    with pytest.raises(coverage.CoverageError, match=message):
        coverage.load_mapping(mapping, docs, scenario_ids=ids)


def test_check_fails_while_the_page_is_stale(tmp_path):
    page = tmp_path / "coverage.md"
    run = lambda *a: subprocess.run([sys.executable, "-m", "conformance", "coverage", "-o", str(page), *a],  # noqa: E731
                                    cwd=REPO, capture_output=True, text=True)
    assert run("--check").returncode == 1
    assert run().returncode == 0 and run("--check").returncode == 0
    page.write_text(page.read_text() + "edited by hand\n")
    stale = run("--check")
    assert stale.returncode == 1 and "python -m conformance coverage" in stale.stderr


#: issue 12's targets: the share of each peer's items about runc-compatible behaviour that scenarios cover
TARGETS = {"runtime-tools": 90.0, "crun": 75.0}


@pytest.mark.parametrize("peer", sorted(TARGETS))
def test_the_catalog_covers_at_least_the_issue_s_share_of_each_peer(ids, peer):
    """Computed from docs/coverage.yaml and the catalog, so a scenario removed (or a mapping made
    strict) that takes a peer below its target fails here, naming how many items it lacks."""
    count = coverage.totals(coverage.load_mapping(scenario_ids=ids))[peer]
    share = coverage.percent(count)
    needed = -(-TARGETS[peer] * count["relevant"] // 100)
    assert share >= TARGETS[peer], (f"{peer}: {count['covered']} of {count['relevant']} items covered "
                                    f"({share:.1f} %), {int(needed - count['covered'])} short of {TARGETS[peer]:g} %")
