"""Benchmarks of falrelay, each beside its baseline in the same run (see bench/README.md).

`python -m bench all` or `python -m bench <name>`; every benchmark starts what it needs on
loopback, prints a table and writes `bench/results/<name>.json`.
"""
