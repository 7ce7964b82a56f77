"""The order items run in (conformance/plugin/order.py): what a scenario declares it must take."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from conformance.catalog.loader import load_scenarios
from conformance.plugin.order import STEP_S, least_seconds

REPO = Path(__file__).resolve().parent.parent


def _scenario(steps=(), hooks=None):
    return SimpleNamespace(steps=tuple(steps), patch={"hooks": hooks} if hooks else {})


def test_sleep_steps_hook_timeouts_and_other_steps_add_up():
    sc = _scenario(steps=["create", {"sleep": 0.5}, "start", {"sleep": 1}],
                   hooks={"prestart": [{"path": "/bin/sleep", "args": ["sleep", "3"], "timeout": 1}]})
    assert least_seconds(sc) == 1.5 + 1 + 2 * STEP_S


def test_a_plain_run_declares_nothing():
    assert least_seconds(_scenario()) == 0


def test_the_catalog_s_longest_by_declaration_are_the_pause_and_the_hook_timeout():
    costs = sorted(((least_seconds(sc), sc.id) for path in (REPO / "scenarios").glob("*.yaml")
                    for sc in load_scenarios(path)), reverse=True)
    assert {sid for _, sid in costs[:2]} == {"freezer-pause-freezes-every-process", "hooks-timeout-enforced"}
