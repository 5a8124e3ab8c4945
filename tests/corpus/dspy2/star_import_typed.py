"""`from dspy.primitives.assertions import *`, TypedPredictor, target_module, bypass handlers."""
import json
import os

import dspy
from dspy.primitives.assertions import *  # noqa: F403


class Answer(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


dspy.settings.configure(lm=dspy.OpenAI(model="gpt-4o-mini", api_base=os.environ["OPENAI_API_BASE"], api_key="k"))


class Pipeline(dspy.Module):
    def __init__(self):
        super().__init__()
        self.draft = dspy.TypedPredictor(Answer)
        self.polish = dspy.Predict("question, draft -> answer")

    def forward(self, question):
        draft = self.draft(question=question).answer
        final = self.polish(question=question, draft=draft)
        Suggest(draft.startswith("zulu"), "star_import_typed: the draft must start with zulu",
                target_module=self.draft)
        Assert(final.answer.startswith("zulu"), "star_import_typed: the answer must start with zulu")
        return final


lenient = assert_transform_module(Pipeline(), noop_handler)  # noqa: F405
print(json.dumps({"program": "star_import_typed", "result": "bypassed", "ok": bool(lenient(question="2+2?"))}))
strict = assert_transform_module(Pipeline(), backtrack_handler, max_backtracks=2)  # noqa: F405
try:
    strict(question="2+2?")
except DSPyAssertionError as error:  # noqa: F405
    print(json.dumps({"program": "star_import_typed", "result": "assert raised", "msg": error.msg}))
