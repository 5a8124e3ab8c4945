"""dspy.BestOfN and dspy.Refine inside a user's module (the DSPy output refinement tutorial shape)."""

import dspy


def one_word_answer(args, pred):
    return 1.0 if len(pred.answer.split()) == 1 else 0.0


class BestAnswer(dspy.Module):
    def __init__(self):
        super().__init__()
        qa = dspy.ChainOfThought("question -> answer")
        self.best_of_3 = dspy.BestOfN(module=qa, N=3, reward_fn=one_word_answer, threshold=1.0)

    def forward(self, question):
        return self.best_of_3(question=question)


class RefinedAnswer(dspy.Module):
    def __init__(self):
        super().__init__()
        self.refine = dspy.Refine(module=dspy.ChainOfThought("question -> answer"), N=2, reward_fn=one_word_answer,
                                  threshold=1.0)

    def forward(self, question):
        return self.refine(question=question)
