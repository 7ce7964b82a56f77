"""The scenario catalog on disk: YAML files read with line numbers, validated against the
JSON Schema, turned into model.Scenario; and the generated page docs/catalog.md.
"""
