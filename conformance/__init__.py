"""Conformance suite for OCI container runtimes: which isolation properties each one delivers."""
