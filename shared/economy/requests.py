"""Items -> provider batch requests, and provider answers -> outputs, through the program's adapter.

A request carries exactly the messages a live call would send (``adapter.format`` with the
predictor's instructions and demos) and the LM's generation settings; an answer is parsed with
``adapter.parse`` against the same signature and checked by the job's output validation, so an
economy result is the one a live call would have produced. Anything else (an error line, an
unparseable or invalid answer, an item the provider left when its batch expired) is Unanswered,
and the worker finishes that item live.
"""

from __future__ import annotations

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


def request_line(custom_id: str, inputs: dict[str, Any], stage: Stage, model: str,
                 lm_kwargs: dict[str, Any]) -> dict[str, Any]:
    """One line of an OpenAI batch input file."""
    wanted = {k: v for k, v in inputs.items() if k in stage.signature.input_fields}
    messages = stage.adapter.format(stage.signature, stage.demos, wanted)
    body: dict[str, Any] = {"model": provider_model(model), "messages": messages}
    body.update({k: lm_kwargs[k] for k in GENERATION_SETTINGS if lm_kwargs.get(k) is not None})
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def parse_answer(line: dict | None, stage: Stage, validation: ValidationConfig,
                 prices: Prices | None) -> tuple[dict[str, Any], float | None, dict[str, int]]:
    """(outputs, cost at the batch price, usage) of one output line; Unanswered otherwise."""
    if line is None:
        raise Unanswered("the provider batch returned no line for this item")
    error = line.get("error")
    response = line.get("response") or {}
    if error:
        raise Unanswered(f"provider error {error.get('code')}: {error.get('message')}")
    body = response.get("body") or {}
    if response.get("status_code") != 200:
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        raise Unanswered(f"provider answered HTTP {response.get('status_code')}: {message}")
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise Unanswered("the provider's answer has no message content") from None
    try:
        outputs = stage.adapter.parse(stage.signature, content or "")
    except Exception as exc:
        raise Unanswered(f"the adapter could not parse the answer: {type(exc).__name__}: {str(exc)[:300]}") from None
    if validation.active and (reasons := check_outputs(validation, outputs)):
        raise Unanswered(f"output validation failed: {'; '.join(reasons)}")
    usage = body.get("usage") or {}
    tokens = {"input_tokens": int(usage.get("prompt_tokens") or 0), "output_tokens": int(usage.get("completion_tokens") or 0)}
    cost = None if prices is None or not usage else prices.cost(tokens["input_tokens"], tokens["output_tokens"], batch=True)
    return outputs, cost, tokens
