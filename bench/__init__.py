"""Benchmarks that print figures (not timed tests): `make bench` or `python -m bench`."""
