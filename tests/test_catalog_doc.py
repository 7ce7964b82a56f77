"""docs/catalog.md is generated from scenarios/, and the committed page must be what they give."""
from __future__ import annotations

import subprocess
import sys

from conformance.catalog import page as catalog
from tests.conftest import REPO, write_scenarios

ONE = """
id: one
title: the first | with a pipe
tags: [pid]
control: [pid]
clause: config-linux.md#namespaces
run: echo $$
expect: {exit: 0, stdout: "1"}
"""
TWO = """
id: two
title: the second
tags: [overlay, rootfs]
control: [overlay]
requires: [overlayfs]
clause: image-spec/layer.md#whiteouts
image: {layers: [{whiteouts: [/etc/hostname]}]}
run: "true"
expect: {exit: 0}
"""


def _catalog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "conformance", "catalog", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_the_committed_catalog_is_up_to_date_with_scenarios():
    scenarios = catalog.load_catalog(REPO / "scenarios")
    want = catalog.render(scenarios, catalog.PAGE.parent)
    why = catalog._stale(catalog.PAGE, want, scenarios)
    assert why is None, f"{why}: run `python -m conformance catalog` and commit docs/catalog.md"


def test_every_scenario_has_its_row_with_control_requires_and_clause():
    page = catalog.PAGE.read_text()
    for sc in catalog.load_catalog(REPO / "scenarios"):
        row = next(line for line in page.splitlines() if line.startswith(f"| [`{sc.id}`]"))
        assert f"(../scenarios/{sc.path.relative_to(REPO / 'scenarios').as_posix()})" in row
        assert all(f"`{s}`" in row for s in (*sc.control, *sc.tags, *sc.requires)), row
        assert sc.clause is None or sc.clause in row, row


def test_check_fails_until_the_page_is_regenerated(tmp_path):
    sc = write_scenarios(tmp_path / "sc", {"one.yaml": ONE})
    page = tmp_path / "docs" / "catalog.md"
    args = ("--scenarios", str(sc), "-o", str(page))
    missing = _catalog(*args, "--check")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert _catalog(*args).returncode == 0 and page.exists()
    assert _catalog(*args, "--check").returncode == 0

    write_scenarios(sc, {"two.yaml": TWO})  # someone adds a scenario and forgets the page
    stale = _catalog(*args, "--check")
    assert stale.returncode == 1
    assert "out of date (not listed: two)" in stale.stderr and "python -m conformance catalog" in stale.stderr
    assert _catalog(*args).returncode == 0 and _catalog(*args, "--check").returncode == 0

    text = page.read_text()
    assert "2 scenarios" in text
    assert "| [`one`](../sc/one.yaml) | the first \\| with a pipe | `pid` | `pid` | 2 to prove · 0 corroborating | — |" in text
    assert ("[image-spec/layer.md#whiteouts](https://github.com/opencontainers/image-spec/blob/main/layer.md#whiteouts)"
            in text)
    assert "[config-linux.md#namespaces](https://github.com/opencontainers/runtime-spec/blob/main/" in text
    assert "| `overlay` | 1 | two |" in text and "| `cgroupns` | 0 | **none yet** |" in text
    assert "[rootfs/overlay](#rootfsoverlay) (1)" in text

    (sc / "one.yaml").unlink()
    gone = _catalog(*args, "--check")
    assert gone.returncode == 1 and "listed but gone: one" in gone.stderr


def test_an_invalid_scenario_is_named_with_its_line(tmp_path):
    sc = write_scenarios(tmp_path / "sc", {"bad.yaml": ONE.replace("tags: [pid]", "tags: [pid]\nfoo: 1")})
    done = _catalog("--scenarios", str(sc), "-o", str(tmp_path / "c.md"))
    assert done.returncode == 2
    assert "bad.yaml:5: unknown key 'foo'" in done.stderr
    assert not (tmp_path / "c.md").exists()
