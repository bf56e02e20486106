"""Standalone benchmarks of segexp: `python -m bench.<name> [--quick]`, results in bench/results/.

throughput (B1), compute (B2), inference (B3), scaling (B4), startup (B5); `python -m bench.run_all`
runs them all and writes BENCHMARKS.md at the repository root.
"""
