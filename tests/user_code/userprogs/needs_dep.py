"""A module whose own dependency is missing: the module exists, so even a producer can tell."""

import dspy
import not_installed_dependency_xyz  # noqa: F401


class Program(dspy.Module):
    def forward(self, question):
        return dspy.Prediction(answer=question)
