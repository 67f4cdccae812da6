"""Benchmarks of the lab: `python -m bench` (runtime and site figures, side by side).

Not part of the product: nothing in labs/ or runtime/ imports it.
"""
