"""The pytest layer: options and set-up (hooks), collection and items, the matrix and
baseline reporters, and the fixtures for tests written in Python.  Registered through
the ``pytest11`` entry point ``conformance.plugin.hooks``.
"""
