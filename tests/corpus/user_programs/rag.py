"""RAG with a retriever and an __init__ argument that has a default (the DSPy RAG tutorial shape)."""

import dspy

PASSAGES = [
    "The Seine flows through Paris.",
    "The Thames flows through London.",
    "The Tiber flows through Rome.",
    "The Danube flows through Vienna and Budapest.",
]


def retrieve(query: str, k: int = 3) -> list[str]:
    """Local in-memory stand-in for dspy.Retrieve / ColBERTv2: passages sharing the most words."""
    words = set(query.lower().replace("?", "").split())
    ranked = sorted(PASSAGES, key=lambda p: (-len(words & set(p.lower().rstrip(".").split())), p))
    return ranked[:k]


class RAG(dspy.Module):
    def __init__(self, num_passages=3):
        super().__init__()
        self.num_passages = num_passages
        self.generate_answer = dspy.ChainOfThought("context, question -> answer")

    def forward(self, question):
        context = retrieve(question, k=self.num_passages)
        prediction = self.generate_answer(context=context, question=question)
        return dspy.Prediction(context=context, answer=prediction.answer)
