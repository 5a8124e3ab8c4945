"""A program that runs its own threads (dspy.Parallel inside forward): three drafts, then a pick."""

import dspy


class Fanout(dspy.Module):
    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question, angle -> draft")
        self.pick = dspy.Predict("question, drafts: list[str] -> answer")

    def forward(self, question):
        calls = [(self.draft, {"question": question, "angle": angle}) for angle in ("short", "long", "odd")]
        drafts = [p.draft for p in dspy.Parallel(num_threads=3, disable_progress_bar=True)(calls)]
        return self.pick(question=question, drafts=drafts)
