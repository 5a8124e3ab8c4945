"""Parts of DSPy 2.x that DSPy 3 removed, kept on DSPy 3.4 with their 2.x behaviour (public as
``tidyq.dspy2``), so that ``tidyq migrate`` can move 2.x code to them mechanically.

Each is written from what dspy 2.5.43 did (its source is not copied):

- ``ChainOfThoughtWithHint(signature, rationale_type=None, **config)``: a dspy.ChainOfThought that
  takes an optional ``hint`` input; a truthy hint is appended to the last input field as
  ``"\\n\\t\\t(secret hint: ...)"``, and the trace entry keeps the inputs without the hint (so demos
  bootstrapped with hints do not carry them);
- ``Evaluate(..., return_outputs=False, return_all_scores=False)``: dspy.Evaluate whose call returns
  2.x's tuples when asked: ``(score, results)``, ``(score, all_scores)`` or ``(score, results,
  all_scores)``; otherwise DSPy 3's EvaluationResult (which behaves as the 2.x float score);
- ``Clarifai(model=URL, api_key=None, **kwargs)``: 2.x's Clarifai client as a ``dspy.LM`` on
  litellm's ``clarifai/`` provider, with 2.x's defaults (temperature 0.0 and max_tokens 150 unless
  ``inference_params`` give them);
- ``inspect_history(lm, n=1, skip=0)``: 2.x's legacy clients' ``lm.inspect_history(n, skip)``: the
  ``n`` calls before the last ``skip`` ones (DSPy 3's ``inspect_history`` has no ``skip``);
- ``KNNFewShot(k, trainset, vectorizer=None, **bootstrap_args)`` / ``KNN(k, trainset, vectorizer=None)``:
  DSPy 3's, with 2.x's default vectorizer when none is given: sentence-transformers' all-MiniLM-L6-v2
  (``sentence_transformers_vectorizer``; an ImportError naming the pip package without it);
- ``cache_turn_on``: 2.x's flag (``DSP_CACHEBOOL`` not "false"); as in 2.x, ``DSP_CACHEBOOL=false``
  turns DSPy's LM cache off when this module is imported.

Retrievers (QdrantRM, OpenAIVectorizer, Pyserini, ClarifaiRM) are in shared.dspy2_retrievers.
"""

from __future__ import annotations

import os
from typing import Any

import dspy

cache_turn_on = os.environ.get("DSP_CACHEBOOL", "True").lower() != "false"
if not cache_turn_on:
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)

HINT = "\n\t\t(secret hint: {})"


def sentence_transformers_vectorizer(model: str = "all-MiniLM-L6-v2", batch_size: int = 256,
                                     normalize_embeddings: bool = False) -> dspy.Embedder:
    """2.x's default KNN vectorizer (dsp.SentenceTransformersVectorizer) as a dspy.Embedder."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError("2.x's default KNN vectorizer needs sentence-transformers: "
                          "pip install sentence-transformers") from None
    encoder = SentenceTransformer(model)

    def encode(texts: list[str]) -> Any:
        return encoder.encode(texts, batch_size=batch_size, normalize_embeddings=normalize_embeddings)

    return dspy.Embedder(encode)


class KNNFewShot(dspy.KNNFewShot):
    """dspy.KNNFewShot whose vectorizer defaults to 2.x's (sentence-transformers, all-MiniLM-L6-v2)."""

    def __init__(self, k: int, trainset: list, vectorizer: Any = None, **few_shot_bootstrap_args: Any):
        super().__init__(k, trainset, vectorizer or sentence_transformers_vectorizer(), **few_shot_bootstrap_args)


class KNN(dspy.KNN):
    """dspy.KNN whose vectorizer defaults to 2.x's (sentence-transformers, all-MiniLM-L6-v2)."""

    def __init__(self, k: int, trainset: list, vectorizer: Any = None):
        super().__init__(k, trainset, vectorizer or sentence_transformers_vectorizer())


def inspect_history(lm: Any, n: int = 1, skip: int = 0, **kwargs: Any) -> None:
    """Prints ``lm``'s ``n`` calls before its last ``skip`` (2.x's ``inspect_history(n, skip)``), in
    DSPy 3's format; other keywords (``file=``) go to DSPy's printer. 2.x also folded consecutive calls
    with the same prompt into one; DSPy 3's history keeps each."""
    from dspy.utils.inspect_history import pretty_print_history

    history = list(getattr(lm, "history", []) or [])
    pretty_print_history(history[:len(history) - skip] if skip > 0 else history, n, **kwargs)


class ChainOfThoughtWithHint(dspy.Module):
    """dspy 2.x's ChainOfThoughtWithHint (see the module docstring)."""

    def __init__(self, signature: Any, rationale_type: Any = None, **config: Any):
        super().__init__()
        self.signature = dspy.ensure_signature(signature)
        if rationale_type is not None:
            config["rationale_field"] = rationale_type  # 2.x's rationale_type is DSPy 3's rationale_field
        self.module = dspy.ChainOfThought(self.signature, **config)

    def forward(self, **kwargs: Any) -> Any:
        hint = kwargs.pop("hint", None)
        if not hint:
            return self.module(**kwargs)
        original = dict(kwargs)
        last = list(self.signature.input_fields)[-1]
        kwargs[last] = str(kwargs.get(last, "")) + HINT.format(hint)
        pred = self.module(**kwargs)
        trace = dspy.settings.trace
        if trace:
            predictor, _, outputs = trace[-1]
            trace[-1] = (predictor, original, outputs)
        return pred


class Evaluate(dspy.Evaluate):
    """dspy.Evaluate with 2.x's ``return_outputs`` / ``return_all_scores`` (see the module docstring)."""

    def __init__(self, *args: Any, return_all_scores: bool = False, return_outputs: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.return_all_scores = return_all_scores
        self.return_outputs = return_outputs

    def __call__(self, program: Any, *args: Any, return_all_scores: bool | None = None,
                 return_outputs: bool | None = None, **kwargs: Any) -> Any:
        result = super().__call__(program, *args, **kwargs)
        all_scores = self.return_all_scores if return_all_scores is None else return_all_scores
        outputs = self.return_outputs if return_outputs is None else return_outputs
        scores = [score for *_, score in result.results]
        if all_scores and outputs:
            return result.score, result.results, scores
        if all_scores:
            return result.score, scores
        if outputs:
            return result.score, result.results
        return result


CLARIFAI_DEFAULT = "https://clarifai.com/mistralai/completion/models/mistral-7B-Instruct"


def clarifai_model(url: str) -> str:
    """litellm's name for a Clarifai model URL: ``https://clarifai.com/USER/APP/models/MODEL`` ->
    ``clarifai/USER.APP.MODEL`` (litellm turns the dotted name back into that URL)."""
    parts = url.rstrip("/").split("/")
    if len(parts) < 4 or parts[-2] != "models":
        raise ValueError(f"not a Clarifai model URL (https://clarifai.com/USER/APP/models/MODEL): {url!r}")
    user, app, model = parts[-4], parts[-3], parts[-1]
    return f"clarifai/{user}.{app}.{model}"


def Clarifai(model: str = CLARIFAI_DEFAULT, api_key: str | None = None, **kwargs: Any) -> dspy.LM:  # noqa: N802
    """dspy 2.x's ``dspy.Clarifai`` client as a dspy.LM (2.x's ClarifaiLLM read temperature and
    max_tokens from ``inference_params``, defaulting to 0.0 and 150)."""
    params = dict(kwargs.pop("inference_params", None) or {})
    params.setdefault("temperature", 0.0)
    params.setdefault("max_tokens", 150)
    return dspy.LM(clarifai_model(model), api_key=api_key, **kwargs, **params)
