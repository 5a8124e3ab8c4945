"""Legacy DSPy 2.6: assertions in a child module, activated on the parent."""
import dspy
from tidyllm.dspy_gateway_backend import configure_dspy_with_gateway

configure_dspy_with_gateway("claude-3-sonnet")


class Answer(dspy.Module):
    def __init__(self):
        super().__init__()
        self.gen = dspy.Predict("question -> answer")

    def forward(self, question):
        out = self.gen(question=question)
        dspy.Assert(out.answer.strip() != "", "The answer must not be blank")
        return out


class TwoStep(dspy.Module):
    def __init__(self):
        super().__init__()
        self.rewrite = dspy.Predict("question -> query")
        self.answer = Answer()

    def forward(self, question):
        query = self.rewrite(question=question).query
        return self.answer(question=query)


program = TwoStep().activate_assertions()
print(program(question="Who wrote Hamlet?").answer)
