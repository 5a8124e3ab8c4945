"""`Module().activate_assertions()` and `self.activate_assertions()`-style activation, Suggest only."""
import json
import os

import dspy

dspy.configure(lm=dspy.OpenAI(model="gpt-4o-mini", api_base=os.environ["OPENAI_API_BASE"], api_key="sk-t"))


class Tweet(dspy.Module):
    def __init__(self):
        super().__init__()
        self.write = dspy.Predict("topic -> tweet")

    def forward(self, topic):
        result = self.write(topic=topic)
        dspy.Suggest("#" in result.tweet, "method_activation: add a hashtag")
        return result


program = Tweet().activate_assertions(max_backtracks=1)
pred = program(topic="queues")
print(json.dumps({"program": "method_activation", "result": "returned", "has_tweet": bool(pred.tweet)}))
try:
    Tweet()(topic="queues")  # never activated: a failing Suggest raises, as in 2.x
except Exception as error:  # noqa: BLE001 - the point is which class
    print(json.dumps({"program": "method_activation", "result": type(error).__name__}))
