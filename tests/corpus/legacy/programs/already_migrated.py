"""Already on the unified wrapper and DSPy 3: tidyq migrate must leave this file unchanged."""
import os

import dspy

from shared import UnifiedConfig, UnifiedDSPyWrapper
from shared.migrate.runtime import RefineAssertions


class QA(dspy.Module):
    def __init__(self):
        super().__init__()
        self.gen = dspy.Predict("question -> answer")

    def forward(self, question):
        return self.gen(question=question)

    @staticmethod
    def assertion_checks(args, pred):
        """Checks already migrated."""
        yield "assert", bool(pred.answer), "non-empty"


wrapper = UnifiedDSPyWrapper(UnifiedConfig.from_env(backend=os.environ.get("TIDYQ_BACKEND", "gateway")))
dspy.configure(lm=wrapper.lm)
print(RefineAssertions(QA(), QA.assertion_checks, attempts=3)(question="What is 2+2?").answer)
