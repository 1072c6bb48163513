"""Benchmarks: each prints rates and ratios measured in one run (`python -m benchmarks.run`)."""
