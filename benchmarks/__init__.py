"""Benchmarks of the loyaltylayer SDK: ``python benchmarks/run.py`` (see ``docs/benchmarks.md``).

Every figure is a ratio against a baseline measured in the same run, because the machines that
run them are shared and noisy: an absolute number from one run says little about the next.
"""
