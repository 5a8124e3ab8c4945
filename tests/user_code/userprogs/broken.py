"""A module that fails while it is imported (a bug in the user's code)."""

import dspy

THRESHOLD = int("not a number")


class Never(dspy.Module):
    def forward(self, question):
        return dspy.Prediction(answer=question)
