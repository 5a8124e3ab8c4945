"""A module whose import fails: a dependency the worker does not have."""

import dspy
import faiss_not_installed_here  # noqa: F401

qa = dspy.Predict("question -> answer")
