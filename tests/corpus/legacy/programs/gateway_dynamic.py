"""Legacy: configure DSPy through the gateway helper, then base_module's dynamic modules."""
import dspy
from tidyllm.base_module import DynamicModule
from tidyllm.dspy_gateway_backend import configure_dspy_with_gateway

lm = configure_dspy_with_gateway(model_name="claude-3-sonnet", temperature=0.0)

summarize = DynamicModule("text -> summary")
reason = DynamicModule("question -> answer", module_type="chain_of_thought")


class Pipeline(dspy.Module):
    def __init__(self):
        super().__init__()
        self.step = DynamicModule("question -> answer")

    def forward(self, question):
        return self.step(question=question)


print(summarize(text="DSPy programs run on a job queue.").summary)
print(reason(question="Why is the sky blue?").answer)
print(Pipeline()(question="What is 2+2?").answer)
print(type(lm).__name__)
