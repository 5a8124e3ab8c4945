"""Legacy DSPy 2.6: a hard assertion that keeps failing after the backtracks raises."""
import dspy
import dspy.primitives.assertions
from dspy.primitives.assertions import assert_transform_module
from tidyllm.dspy_gateway_backend import configure_dspy_with_gateway

configure_dspy_with_gateway("claude-3-sonnet")


class Impossible(dspy.Module):
    def __init__(self):
        super().__init__()
        self.gen = dspy.Predict("question -> answer")

    def forward(self, question):
        prediction = self.gen(question=question)
        dspy.Suggest(len(prediction.answer) > 1, "Say something")
        dspy.Assert(prediction.answer.startswith("zulu"), "Start with zulu")
        return prediction


program = Impossible()
program = assert_transform_module(program, max_backtracks=1)
try:
    program(question="What is 2+2?")
    print("no error")
except dspy.primitives.assertions.DSPyAssertionError as exc:
    print("raised after backtracks:", "zulu" in str(exc))
