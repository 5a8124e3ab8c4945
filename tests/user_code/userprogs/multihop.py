"""Multi-hop question answering: three predictors with a Python retrieval step between them."""

import dspy


def search(query: str, k: int = 3) -> list[str]:
    """A deterministic stand-in for a retriever: runs on the worker, between two LM calls."""
    return [f"passage {i} for {query[:24]}" for i in range(k)]


class MultiHop(dspy.Module):
    def __init__(self):
        super().__init__()
        self.generate_query = dspy.Predict("question -> query")
        self.take_notes = dspy.Predict("question, passages: list[str] -> notes: list[str]")
        self.answer = dspy.Predict("question, notes: list[str] -> answer")

    def forward(self, question):
        query = self.generate_query(question=question).query
        passages = search(query)
        notes = self.take_notes(question=question, passages=passages).notes
        answer = self.answer(question=question, notes=notes).answer
        return dspy.Prediction(query=query, passages=passages, notes=notes, answer=answer)
