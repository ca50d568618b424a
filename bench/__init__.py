"""Benchmark programs for the gateway (not tests; pytest does not collect them)."""
