"""Benchmark scripts: each prints its figures (run ``python -m gmlib.bench.<name>``).

Speed targets are checked here, by scripts that print numbers measured in one run
against a baseline, not by timed tests (which would be flaky on shared machines).
"""
