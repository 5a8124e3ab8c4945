"""Legacy DSPy 2.6: a Suggest that never holds; after the backtracks 2.6 let it pass."""
import dspy
from dspy.primitives.assertions import assert_transform_module, backtrack_handler
from tidyllm.dspy_gateway_backend import configure_dspy_with_gateway

configure_dspy_with_gateway("claude-3-sonnet")


class Tagline(dspy.Module):
    def __init__(self):
        super().__init__()
        self.write = dspy.Predict("product -> tagline")

    def forward(self, product):
        pred = self.write(product=product)
        dspy.Suggest("zulu" in pred.tagline, "Mention zulu")
        return pred


print(assert_transform_module(Tagline(), backtrack_handler)(product="a queue").tagline)
