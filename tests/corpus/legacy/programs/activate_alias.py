"""Legacy DSPy 2.6 through an alias: `import dspy as d`, activate_assertions, functools.partial."""
import functools

import dspy as d
from dspy.primitives.assertions import backtrack_handler
from tidyllm.dspy_gateway_backend import configure_dspy_with_gateway

configure_dspy_with_gateway("claude-3-sonnet")


class Summarize(d.Module):
    def __init__(self):
        super().__init__()
        self.summarize = d.Predict("text -> summary")

    def forward(self, text):
        result = self.summarize(text=text)
        d.Suggest(len(result.summary.split()) < 60, "Keep the summary under 60 words")
        return result


summarizer = Summarize().activate_assertions()
print(summarizer(text="Queues decouple producers from workers.").summary)

careful = Summarize()
careful.activate_assertions(functools.partial(backtrack_handler, max_backtracks=1))
print(careful(text="Redis is the broker.").summary)
