"""A user's package of DSPy programs, as the tests install it on the workers (PYTHONPATH)."""
