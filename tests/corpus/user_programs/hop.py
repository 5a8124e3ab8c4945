"""Multi-hop search (the DSPy multihop_search tutorial shape): no super().__init__(), arguments with
defaults, a retriever returning a dict, list[str] outputs accumulated over hops, a set() at the end."""

import dspy

DOCS = {f"Doc{i} | fact number {i} about the claim": float(i) for i in range(20)}


def search(query: str, k: int) -> dict[str, float]:
    """Local in-memory stand-in for the tutorial's BM25 retriever: {passage: score}."""
    ranked = sorted(DOCS, key=lambda d: (len(d) + len(query)) % 7 + DOCS[d] / 100)
    return {doc: DOCS[doc] for doc in ranked[:k]}


class Hop(dspy.Module):
    def __init__(self, num_docs=3, num_hops=2):
        self.num_docs, self.num_hops = num_docs, num_hops
        self.generate_query = dspy.ChainOfThought("claim, notes -> query")
        self.append_notes = dspy.ChainOfThought("claim, notes, context -> new_notes: list[str], titles: list[str]")

    def forward(self, claim: str) -> list[str]:
        notes = []
        titles = []
        for _ in range(self.num_hops):
            query = self.generate_query(claim=claim, notes=notes).query
            context = search(query, k=self.num_docs)
            prediction = self.append_notes(claim=claim, notes=notes, context=context)
            notes.extend(prediction.new_notes)
            titles.extend(prediction.titles)
        return dspy.Prediction(notes=notes, titles=list(set(titles)))
