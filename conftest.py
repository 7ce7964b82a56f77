"""Repository root conftest.

The harness is a pytest plugin registered through the ``pytest11`` entry point
(see pyproject.toml), so an installed checkout needs nothing here.  This file
only keeps a bare checkout usable: if the package is not installed, load the
plugin from the source tree.
"""
import importlib.util

if importlib.util.find_spec("conformance.plugin.hooks") is not None:
    try:
        from importlib.metadata import entry_points

        _installed = any(ep.value == "conformance.plugin.hooks" for ep in entry_points(group="pytest11"))
    except Exception:  # pragma: no cover - very old Pythons
        _installed = False
    if not _installed:
        pytest_plugins = ["conformance.plugin.hooks"]
