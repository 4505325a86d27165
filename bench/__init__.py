"""mlmon benchmarks: `python -m bench` (see bench/suite.py)."""
