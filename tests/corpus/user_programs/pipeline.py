"""A ChainOfThought pipeline with Python between the calls and dspy.Parallel over the sections
(the shape of the DSPy llms.txt / summarisation tutorials), a kwargs-only forward() and modules
whose constructor needs arguments (dependency injection, as public RAG apps write them)."""

import dspy


class Outline(dspy.Signature):
    """Outline the topic into sections."""

    topic: str = dspy.InputField()
    sections: list[str] = dspy.OutputField()


class Pipeline(dspy.Module):
    def __init__(self):
        super().__init__()
        self.outline = dspy.ChainOfThought(Outline)
        self.write = dspy.ChainOfThought("topic, section -> paragraph")

    def forward(self, topic):
        sections = [s.strip() for s in self.outline(topic=topic).sections if s.strip()][:3]
        calls = [(self.write, {"topic": topic, "section": s}) for s in sections]
        paragraphs = [p.paragraph for p in dspy.Parallel(num_threads=3, disable_progress_bar=True)(calls)]
        return dspy.Prediction(sections=sections, article="\n\n".join(paragraphs), words=len(" ".join(paragraphs).split()))


class Retriever:
    def query(self, question):
        return [question]


class InjectedRAG(dspy.Module):
    def __init__(self, retriever: Retriever):  # Dependency Injection
        self.respond = dspy.ChainOfThought("context, question -> response")
        self.retriever = retriever

    def forward(self, question):
        return self.respond(context=self.retriever.query(question), question=question)


class SimpleRAG(dspy.Module):
    """Returns a tuple from forward(), as one public example does."""

    def __init__(self, num_passages=3):
        super().__init__()
        self.generate_answer = dspy.ChainOfThought("context, question -> answer")

    def forward(self, question, max_tokens=256):
        context = ["a passage"]
        answer = self.generate_answer(context=context, question=question)
        return context, answer


class Judge(dspy.Module):
    """forward(**kwargs) with three predictors made inside forward (a public injection judge shape)."""

    def forward(self, **kwargs):
        intention = dspy.Predict("query -> intention")(**kwargs).intention
        return dspy.Predict("query, intention -> malevolence: bool")(**kwargs, intention=intention)


class Raises(dspy.Module):
    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    def forward(self, question):
        answer = self.qa(question=question).answer
        raise RuntimeError(f"the user's forward broke after the LM answered {answer[:6]!r}")


class NotJSON(dspy.Module):
    def forward(self, question):
        return dspy.Prediction(answer=question, when=object())


class AsyncOnly(dspy.Module):
    """aforward() only, as DSPy's async tutorial writes modules."""

    def __init__(self):
        super().__init__()
        self.qa = dspy.Predict("question -> answer")

    async def aforward(self, question):
        return await self.qa.acall(question=question)
