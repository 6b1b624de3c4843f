"""Benchmarks: python -m benchmarks.NAME [--quick]; results in benchmarks/results/."""
