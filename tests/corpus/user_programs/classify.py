"""Typed signatures: a Literal output and a float output, a bare dspy.Predict made at import time
(the DSPy signatures docs shape), and a one-predictor module over a review."""

from typing import Literal

import dspy


class Emotion(dspy.Signature):
    """Classify emotion."""

    sentence: str = dspy.InputField()
    sentiment: Literal["sadness", "joy", "love", "anger", "fear", "surprise"] = dspy.OutputField()
    confidence: float = dspy.OutputField()


classify = dspy.Predict(Emotion)


class ClassificationSignature(dspy.Signature):
    """classification task in general domain."""

    review_text: str = dspy.InputField(desc="review_text for the task")
    label: Literal["positive", "negative", "neutral"] = dspy.OutputField(desc="label from the model")
    stars: int = dspy.OutputField(desc="stars from 1 to 5")


class ClassificationProgram(dspy.Module):
    def __init__(self):
        super().__init__()
        self.predictor = dspy.Predict(ClassificationSignature)

    def forward(self, review_text):
        return self.predictor(review_text=review_text)
