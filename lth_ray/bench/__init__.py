"""Throughput benchmark of the training step: one trial, packed trials, the card's ceiling, overhead.

`python -m lth_ray.bench` (see `__main__`): images/s of the naive reference, the card's ceiling, the
project's single-trial step and N packed trials, measured in one run, with ratios and a JSON file.
Ray and MLflow are imported only by the overhead sweep (`overhead`), so the rest runs without them.
Whether the fast path computes what the plain loop computes is a test (tests/test_fastpath_checks.py).
"""
