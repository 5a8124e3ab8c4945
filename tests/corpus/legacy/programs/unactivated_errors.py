"""Legacy DSPy 2.6: a module whose assertions were never activated raises on a failing check;
the program catches 2.6's DSPyAssertionError."""
import dspy
from dspy.primitives.assertions import DSPyAssertionError
from tidyllm.dspy_gateway_backend import configure_dspy_with_gateway

configure_dspy_with_gateway("claude-3-sonnet")


class Strict(dspy.Module):
    def __init__(self):
        super().__init__()
        self.gen = dspy.Predict("question -> answer")

    def forward(self, question):
        pred = self.gen(question=question)
        dspy.Assert("zulu" in pred.answer, "The answer must mention zulu")
        return pred


class Lenient(dspy.Module):
    def __init__(self):
        super().__init__()
        self.gen = dspy.Predict("question -> answer")

    def forward(self, question):
        pred = self.gen(question=question)
        dspy.Assert(bool(pred.answer), "The answer must not be empty")  # 2.x demanded a bool
        return pred


print(Lenient()(question="What is 2+2?").answer)
try:
    Strict()(question="What is 2+2?")
    print("no error")
except DSPyAssertionError as exc:
    print("assertion failed:", type(exc).__name__ in ("DSPyAssertionError",))
