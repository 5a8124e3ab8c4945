"""A program whose output is a pydantic model."""

import dspy
import pydantic


class Person(pydantic.BaseModel):
    name: str
    age: int
    tags: list[str] = []


class ExtractPerson(dspy.Signature):
    """Extract the person described in the text."""

    text: str = dspy.InputField()
    person: Person = dspy.OutputField()


class Extractor(dspy.Module):
    def __init__(self):
        super().__init__()
        self.extract = dspy.Predict(ExtractPerson)

    def forward(self, text: str, hint: str = ""):
        return self.extract(text=text if not hint else f"{text} ({hint})")


class Opaque:
    """Not JSON: a program returning it must fail the item naming the field."""


class ReturnsOpaque(dspy.Module):
    def forward(self, text: str):
        return dspy.Prediction(ok=text, blob=Opaque())
