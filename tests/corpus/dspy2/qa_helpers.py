"""Checks in a helper function and inside if/try, reading locals and self (a common 2.x shape)."""
import json
import os

import dspy
from dspy.primitives.assertions import DSPyAssertionError, assert_transform_module, backtrack_handler

turbo = dspy.OpenAI(model="gpt-4o-mini", api_base=os.environ["OPENAI_API_BASE"], api_key="sk-test", max_tokens=300)
dspy.settings.configure(lm=turbo)


def validate_answer(pred, limit):
    words = pred.answer.split()
    if words:
        dspy.Suggest(len(words) < limit, f"qa_helpers: keep the answer under {limit} words")


class QA(dspy.Module):
    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.generate = dspy.ChainOfThought("question -> answer")

    def forward(self, question):
        pred = self.generate(question=question)
        validate_answer(pred, self.limit)
        try:
            dspy.Assert("zulu" in pred.answer, "qa_helpers: the answer must mention zulu")
        except ValueError:
            pass
        return pred


program = assert_transform_module(QA(limit=2), backtrack_handler)
try:
    program(question="What is the capital of France?")
    print(json.dumps({"program": "qa_helpers", "result": "returned"}))
except DSPyAssertionError as error:
    print(json.dumps({"program": "qa_helpers", "result": "assert raised", "msg": error.msg}))
