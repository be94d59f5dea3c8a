"""Benchmarks behind `shoal bench` and `make bench`: each figure is a median of repeats, and
comparisons run the reference system on the same machine in the same run."""
