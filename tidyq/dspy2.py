"""Parts of DSPy 2.x that DSPy 3 removed, on DSPy 3.4 with their 2.x behaviour:
``from tidyq.dspy2 import ChainOfThoughtWithHint, Evaluate, QdrantRM``.

What ``tidyq migrate`` rewrites those 2.x names to (see docs/migrate.md); the implementations are
shared.dspy2_compat and shared.dspy2_retrievers.
"""

from shared.dspy2_compat import (
    KNN,
    ChainOfThoughtWithHint,
    Clarifai,
    Evaluate,
    KNNFewShot,
    cache_turn_on,
    clarifai_model,
    inspect_history,
    sentence_transformers_vectorizer,
)
from shared.dspy2_retrievers import ClarifaiRM, FastEmbedVectorizer, OpenAIVectorizer, Pyserini, QdrantRM

__all__ = ["ChainOfThoughtWithHint", "Clarifai", "ClarifaiRM", "Evaluate", "FastEmbedVectorizer", "KNN", "KNNFewShot",
           "OpenAIVectorizer", "Pyserini", "QdrantRM", "cache_turn_on", "clarifai_model", "inspect_history",
           "sentence_transformers_vectorizer"]
