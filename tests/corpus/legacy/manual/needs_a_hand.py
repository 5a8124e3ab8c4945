"""Legacy code tidyq migrate must report (and mark), not rewrite. `# expect:` marks each expected finding."""
import dsp
import dspy
from dspy.primitives.assertions import assert_transform_module, backtrack_handler
from tidyllm.dspy_enhanced import DSPyEnhancedWrapper, EnhancedConfig
from tidyllm.dspy_gateway_backend import configure_dspy_with_gateway

settings = {"model_name": "claude-3-sonnet"}
configure_dspy_with_gateway(**settings)  # expect: cannot be mapped statically


class Branchy(dspy.Module):
    def __init__(self):
        super().__init__()
        self.gen = dspy.Predict("question -> answer")

    def forward(self, question):
        pred = self.gen(question=question)
        if question:
            dspy.Assert(len(pred.answer) > 0, "non-empty")  # migrated: tidyq.assertions keeps 2.x semantics
        return pred


class UsesLocal(dspy.Module):
    def __init__(self):
        super().__init__()
        self.gen = dspy.Predict("question -> answer")

    def forward(self, question):
        draft = self.gen(question=question)
        words = draft.answer.split()
        dspy.Suggest(len(words) < 50, "short")  # migrated: tidyq.assertions keeps 2.x semantics
        return draft


def metric(example, pred, trace=None):
    dspy.Suggest(pred.answer != "", "metric check")  # migrated: tidyq.assertions keeps 2.x semantics
    return 1.0


def make():
    return UsesLocal()


program = assert_transform_module(make(), backtrack_handler)  # migrated: the handler is kept as written
retry = dspy.Retry  # expect: dspy.Retry was removed
evaluate = dspy.Evaluate(devset=[], metric=metric, return_outputs=True)  # migrated: tidyq.dspy2.Evaluate keeps the tuple
wrapper = DSPyEnhancedWrapper(config=EnhancedConfig())  # expect: argument 'config' has no UnifiedConfig counterpart
stats = DSPyEnhancedWrapper(model="x").get_performance_stats()  # expect: not one of the legacy entry points
w2 = DSPyEnhancedWrapper(model="x")
w2.get_performance_stats()  # expect: method 'get_performance_stats' has no
legacy_lm = dsp.GPT3  # expect: the dsp package is gone
