"""Speed benchmarks of segexp: `python -m bench.<name> [--quick]`, results in bench/results/.

throughput (B1), compute (B2), precision (B2b), inference (B3), scaling (B4), startup (B5), epoch_profile,
outage, stages (B9: each segmentation stage per 512x512 slice), seed_replica (the seed's own training loop, which
throughput times), suite (the test suite's time);
`python -m bench.run_all` runs them all, and `python -m bench.render` renders every result file (these and the
quality studies' in studies/) into BENCHMARKS.md, README.md and docs/results.md.
"""
