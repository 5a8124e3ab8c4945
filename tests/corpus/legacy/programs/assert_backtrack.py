"""Legacy DSPy 2.6: Assert/Suggest in forward(), activated with assert_transform_module."""
import dspy
from dspy.primitives.assertions import assert_transform_module, backtrack_handler
from tidyllm.dspy_gateway_backend import configure_dspy_with_gateway

configure_dspy_with_gateway("claude-3-sonnet")


class QA(dspy.Module):
    def __init__(self):
        super().__init__()
        self.generate = dspy.ChainOfThought("question -> answer")

    def forward(self, question, style="short"):
        pred = self.generate(question=question)
        # answers must not be empty
        dspy.Assert(len(pred.answer) > 0, "Answer must not be empty")
        dspy.Suggest(len(pred.answer) < 500 or style != "short", f"Keep it {style}")  # soft
        return pred


qa = assert_transform_module(QA(), backtrack_handler)
print(qa(question="What is 2+2?").answer)
