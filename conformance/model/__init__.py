"""The model: what a scenario says and what a run observed, as plain data.

Scenario (validated YAML as typed objects), image spec, placeholders,
matchers, areas, observation records, errors.  Standard library only, and
it imports nothing else of the harness: every other layer builds on it.
"""
