"""An example package of DSPy programs, installed on the workers (here: on their PYTHONPATH)."""
