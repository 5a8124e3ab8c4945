"""Items -> provider batch requests, and provider answers -> outputs, through the program's adapter.

A request carries exactly the messages a live call would send (``adapter.format`` with the
predictor's instructions and demos) and the LM's generation settings; an answer is parsed with
``adapter.parse`` against the same signature and checked by the job's output validation, so an
economy result is the one a live call would have produced. Anything else (an error line, an
unparseable or invalid answer, an item the provider left when its batch expired) is Unanswered,
and the worker finishes that item live.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.config import ValidationConfig
from shared.cost import Prices
from shared.prompts import default_adapter
from shared.validation import check_outputs

GENERATION_SETTINGS = ("temperature", "max_tokens", "top_p", "stop", "seed", "n")


class NotBatchable(Exception):
    """The program cannot be sent as one request per item (its stages depend on Python between calls)."""


class Unanswered(Exception):
    """The provider gave this item no usable answer; the message says why (it is finished live)."""


@dataclass(frozen=True)
class Stage:
    """The one predictor an item's request is rendered for."""

    signature: Any
    demos: list
    adapter: Any


def single_stage(module: Any) -> Stage:
    predictors = module.named_predictors()
    if len(predictors) != 1:
        names = ", ".join(name for name, _ in predictors) or "none"
        raise NotBatchable(f"the program has {len(predictors)} predictors ({names}): later stages take inputs the "
                           "program computes between calls, so they cannot be sent in one provider batch; its "
                           "items run live")
    predictor = predictors[0][1]
    return Stage(predictor.signature, list(predictor.demos or []), default_adapter())


def provider_model(model: str) -> str:
    """The model name the provider knows (``openai/gpt-4o-mini`` -> ``gpt-4o-mini``)."""
    return model.split("/", 1)[1] if "/" in model else model


def generation_settings(lm_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The LM's generation settings a live call would send (unset ones left out)."""
    return {k: lm_kwargs[k] for k in GENERATION_SETTINGS if lm_kwargs.get(k) is not None}


def render(stage: Stage, inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages a live call of the stage sends for ``inputs``."""
    wanted = {k: v for k, v in inputs.items() if k in stage.signature.input_fields}
    return stage.adapter.format(stage.signature, stage.demos, wanted)


@dataclass(frozen=True)
class Answer:
    """One provider result, whatever the provider's wire format: the text, or why there is none."""

    content: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None


def answers_from_jsonl(text: str, id_key: str, to_answer: Callable[[dict[str, Any]], Answer],
                       into: dict[str, Answer] | None = None) -> dict[str, Answer]:
    """A provider's result file (JSONL, any order) -> request id -> Answer."""
    out = {} if into is None else into
    for raw in text.splitlines():
        if raw.strip():
            line = json.loads(raw)
            out[str(line.get(id_key))] = to_answer(line)
    return out


def parse_answer(answer: Answer | None, stage: Stage, validation: ValidationConfig,
                 prices: Prices | None) -> tuple[dict[str, Any], float | None, dict[str, int]]:
    """(outputs, cost at the batch price, usage) of one provider answer; Unanswered otherwise."""
    if answer is None:
        raise Unanswered("the provider batch returned no line for this item")
    if answer.error:
        raise Unanswered(answer.error)
    try:
        outputs = stage.adapter.parse(stage.signature, answer.content or "")
    except Exception as exc:
        raise Unanswered(f"the adapter could not parse the answer: {type(exc).__name__}: {str(exc)[:300]}") from None
    if validation.active and (reasons := check_outputs(validation, outputs)):
        raise Unanswered(f"output validation failed: {'; '.join(reasons)}")
    tokens = {"input_tokens": answer.input_tokens or 0, "output_tokens": answer.output_tokens or 0}
    known = answer.input_tokens is not None and answer.output_tokens is not None
    cost = prices.cost(tokens["input_tokens"], tokens["output_tokens"], batch=True) if prices and known else None
    return outputs, cost, tokens
