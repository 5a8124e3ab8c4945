"""A pydantic list output, int inputs, and the JSON adapter chosen with dspy.configure at import
time (the DSPy adapters docs shape: `dspy.configure(lm=..., adapter=dspy.JSONAdapter())`)."""

import dspy
import pydantic

dspy.configure(adapter=dspy.JSONAdapter())


class ScienceNews(pydantic.BaseModel):
    text: str
    scientists_involved: list[str]


class NewsQA(dspy.Signature):
    """Get news about the given science field"""

    science_field: str = dspy.InputField()
    year: int = dspy.InputField()
    num_of_outputs: int = dspy.InputField()
    news: list[ScienceNews] = dspy.OutputField(desc="science news")


predict = dspy.Predict(NewsQA)
