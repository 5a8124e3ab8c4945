"""Retrieval-augmented QA as a user writes it: two predictors with Python retrieval between them.

Run through tidyq as ``--program rag_programs.rag:RAG`` (the class) or ``rag_programs.rag:make_rag``
(a zero-argument factory); the workers import this module because TIDYQ_PROGRAM_PACKAGES lists
``rag_programs``.
"""

import dspy

CORPUS = [
    "The Seine flows through Paris before reaching the English Channel at Le Havre.",
    "The Danube passes through Vienna, Bratislava, Budapest and Belgrade.",
    "The Thames runs through London and Oxford.",
    "The Tiber crosses Rome and reaches the sea at Ostia.",
    "The Vltava flows through Prague and joins the Elbe at Melnik.",
]


def retrieve(query: str, k: int = 2) -> list[str]:
    """A tiny keyword retriever: any Python runs on the worker between the LM calls."""
    words = {w.strip("?.,").lower() for w in query.split() if len(w) > 3}
    scored = sorted(CORPUS, key=lambda doc: -len(words & {w.strip(".,").lower() for w in doc.split()}))
    return scored[:k]


class RAG(dspy.Module):
    def __init__(self, k: int = 2):
        super().__init__()
        self.k = k
        self.rewrite = dspy.Predict("question -> search_query")
        self.respond = dspy.ChainOfThought("context: list[str], question -> answer, confidence: float")

    def forward(self, question: str):
        query = self.rewrite(question=question).search_query
        context = retrieve(f"{question} {query}", self.k)
        answer = self.respond(context=context, question=question)
        return dspy.Prediction(context=context, answer=answer.answer, confidence=answer.confidence)


def make_rag() -> RAG:
    return RAG(k=3)
