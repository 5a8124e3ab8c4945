# %%
%load_ext autoreload
%autoreload 2
import json
import os

try:  # on Colab, install what is missing
    import dspy_extras_for_this_notebook  # noqa: F401
except ImportError:
    !pip install dspy-ai==2.4.17

import dspy
from dspy.primitives.assertions import assert_transform_module, backtrack_handler

# %%
turbo = dspy.OpenAI(model="gpt-3.5-turbo", api_base=os.environ["OPENAI_API_BASE"], api_key="k")
dspy.settings.configure(lm=turbo)

# %%
class Quiz(dspy.Module):
    def __init__(self):
        super().__init__()
        self.generate_choices = dspy.ChainOfThought("question, answer -> answer_choices")

    def forward(self, question, answer):
        choices = self.generate_choices(question=question, answer=answer).answer_choices
        dspy.Suggest(choices.count(",") >= 3, "notebook_export: give four comma separated choices")
        return dspy.Prediction(choices=choices)

# %%
quiz = assert_transform_module(Quiz(), backtrack_handler)
print(json.dumps({"program": "notebook_export", "result": "returned",
                  "ok": bool(quiz(question="Capital of France?", answer="Paris").choices)}))
