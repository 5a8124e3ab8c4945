"""`import dspy.primitives.assertions as A`, map_named_predictors(Retry), dsp.utils (2.4-era shape)."""
import json
import os

import dspy
import dspy.primitives.assertions as A
from dsp.utils import deduplicate
from dspy.predict import Retry

dspy.settings.configure(lm=dspy.OpenAI(model="gpt-4o-mini", api_base=os.environ["OPENAI_API_BASE"], api_key="k"))


class Queries(dspy.Module):
    def __init__(self):
        super().__init__()
        self.query = dspy.Predict("context, question -> query")

    def forward(self, question):
        queries = []
        for hop in range(2):
            query = self.query(context=" ".join(queries), question=question).query
            A.Suggest(len(query) < 5, "module_alias_retry: keep the query under 5 characters")
            queries = deduplicate(queries + [query])
        return dspy.Prediction(queries=queries)


program = A.assert_transform_module(Queries().map_named_predictors(Retry), A.backtrack_handler)
print(json.dumps({"program": "module_alias_retry", "result": "returned", "n": len(program(question="who?").queries)}))
