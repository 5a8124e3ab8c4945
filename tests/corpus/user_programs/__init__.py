"""DSPy programs in the shapes public users write (see MANIFEST.md), run through the queue by
tests/integration/test_public_programs.py. Network retrievers are local in-memory functions."""
