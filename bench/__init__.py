"""Benchmarks; each prints JSON with ratios measured in the same run (see docs/data.md)."""
