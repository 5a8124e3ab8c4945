"""What a job's LM calls cost, from one price source.

Prices come from LiteLLM's model price map as DSPy 3.4 ships it (``dspy.clients.model_metadata``,
the map ``shared.steps.metrics`` already prices every live call with), read locally: tidyq sets
``LITELLM_LOCAL_MODEL_COST_MAP=True`` (set before the first lookup unless the environment chose)
so no producer or worker fetches a map from the internet. One source
means an estimate, a live result's ``cost_usd`` and an economy result's discounted price agree.

A price that is unknown stays ``None`` (never 0): the mock backend is the one free target.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from shared.steps.stats import CallStats

# Providers' batch APIs bill about half the live price when the map has no explicit batch rate.
DEFAULT_BATCH_DISCOUNT = 0.5
FREE_BACKENDS = frozenset({"mock"})


@dataclass(frozen=True)
class Prices:
    """USD per token of one model, live and through the provider's batch API."""

    input: float
    output: float
    batch_input: float
    batch_output: float

    def cost(self, input_tokens: int, output_tokens: int, *, batch: bool = False) -> float:
        if batch:
            return input_tokens * self.batch_input + output_tokens * self.batch_output
        return input_tokens * self.input + output_tokens * self.output


FREE = Prices(0.0, 0.0, 0.0, 0.0)


def use_local_price_map() -> None:
    """Before DSPy's or LiteLLM's first price lookup: read the bundled map, never the internet
    (an explicit LITELLM_LOCAL_MODEL_COST_MAP in the environment wins)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def pricing_key(backend: str, model: str | None) -> tuple[str, str] | None:
    """(price-map provider, model name) of a target, or None when the map cannot price it."""
    if backend in FREE_BACKENDS or not model:
        return None
    if backend == "bedrock":
        return "bedrock", model.removeprefix("bedrock/")
    if backend == "direct" and "/" in model:
        provider, _, name = model.partition("/")
        return provider, name
    return None


def prices_for(backend: str, model: str | None) -> Prices | None:
    """The target's prices, ``FREE`` for the mock, None when the price map has no entry."""
    if backend in FREE_BACKENDS:
        return FREE
    key = pricing_key(backend, model)
    if key is None:
        return None
    use_local_price_map()
    from dspy.clients.model_metadata import model_info, rate

    info = model_info(*key)
    live_in, live_out = rate(info, "input_cost_per_token"), rate(info, "output_cost_per_token")
    if live_in is None or live_out is None:
        return None
    batch_in = rate(info, "input_cost_per_token_batches")
    batch_out = rate(info, "output_cost_per_token_batches")
    return Prices(live_in, live_out,
                  live_in * DEFAULT_BATCH_DISCOUNT if batch_in is None else batch_in,
                  live_out * DEFAULT_BATCH_DISCOUNT if batch_out is None else batch_out)


def estimated_tokens(model: str | None, messages: list[dict], completion: str) -> tuple[int, int]:
    """(prompt, completion) tokens by LiteLLM's tokenizer for ``model`` (its default one otherwise)."""
    use_local_price_map()
    from litellm import token_counter  # imported on first use: submits and status never pay for it

    return token_counter(model=model or "", messages=messages), token_counter(model=model or "", text=completion)


def item_cost(call: CallStats | None, backend: str | None) -> float | None:
    """An item's ``cost_usd`` from the per-call numbers the metrics step gathered: the same number
    the job's tracking sums, so results, status and MLflow agree. Cache hits cost nothing."""
    if backend in FREE_BACKENDS:
        return 0.0
    if call is None:
        return None
    if call.cached:
        return 0.0
    return None if call.cost_usd is None else round(call.cost_usd, 12)
