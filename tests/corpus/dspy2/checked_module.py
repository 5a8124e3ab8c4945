"""A module with checks, defined in one file and activated in another (activation_of_import.py)."""
import dspy


class Summarize(dspy.Module):
    def __init__(self):
        super().__init__()
        self.summarize = dspy.Predict("document -> summary")

    def forward(self, document):
        out = self.summarize(document=document)
        dspy.Suggest(out.summary.endswith("."), "checked_module: end the summary with a full stop")
        dspy.Assert(len(out.summary) > 1000, "checked_module: the summary must be detailed")
        return out
