"""Legacy DSPy 2.5/2.6 names removed in DSPy 3: TypedPredictor, dspy.Program, dspy.OpenAI."""
import dspy
from dspy import TypedChainOfThought
from tidyllm.dspy_enhanced import DSPyEnhancedWrapper

openai_lm = dspy.OpenAI(model="gpt-4o-mini", max_tokens=250)  # built, not called


class Classify(dspy.Program):
    def __init__(self):
        super().__init__()
        self.label = dspy.TypedPredictor("text -> label: bool")
        self.explain = TypedChainOfThought("text -> why")

    def forward(self, text):
        return dspy.Prediction(label=self.label(text=text).label, why=self.explain(text=text).why)


wrapper = DSPyEnhancedWrapper()
print(wrapper.create_module(Classify()).predict(text="great product").label in (True, False))
print(type(openai_lm).__name__, openai_lm.model)
