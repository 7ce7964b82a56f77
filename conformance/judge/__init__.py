"""The judge: an observation against a scenario's expectations, as a verdict with evidence.

Runs where pytest runs, on records that came from any host.  Model only.
"""
