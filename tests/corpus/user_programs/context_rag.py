"""A signature class with a docstring and a list[str] input, the module made at import time
and no super().__init__() (a shape found in public RAG apps)."""

import dspy


class RAGSignature(dspy.Signature):
    """You are a factual assistant. Answer ONLY using the provided context."""

    context: list[str] = dspy.InputField()
    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


class RAGModule(dspy.Module):
    def __init__(self):
        self.generate = dspy.ChainOfThought(RAGSignature)

    def forward(self, context, question):
        return self.generate(context=context, question=question)


rag_module = RAGModule()
